// Package web holds chatstream's browser assets: the chat page and the
// reusable JavaScript client, embedded into the binary, and the page's
// configuration endpoint.
package web

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed static
var static embed.FS

// FS returns the page's files, rooted at the directory that holds index.html.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded static directory missing: " + err.Error())
	}
	return sub
}

// Sign-in modes of the page, as the server's --auth names them.
const (
	// AuthNone: the page asks for a name and connects with ?user=.
	AuthNone = "none"
	// AuthJWT: the page fetches a token from TokenURL and signs in with
	// it (PROTOCOL.md, protocol v1.1).
	AuthJWT = "jwt"
)

// ConfigPath is where the page reads its Config.
const ConfigPath = "/config.json"

// Config is what the page needs to know to sign in, served as JSON at
// ConfigPath. A zero Config is a page that asks for a name.
type Config struct {
	// Auth is the server's sign-in mode, AuthNone or AuthJWT. Default
	// AuthNone.
	Auth string `json:"auth"`
	// TokenURL is the endpoint the page fetches its token from in AuthJWT
	// mode: a POST with the browser's cookies that answers the token as
	// text or as JSON {"token": "..."}, and 401 when nobody is signed in.
	// It must be a path on the page's own address (/auth/token): the
	// page's Content-Security-Policy allows only same-origin requests.
	// Empty in AuthJWT mode: the page cannot sign in and says so.
	TokenURL string `json:"tokenUrl,omitempty"`
	// SignInURL is where the page sends a user who is not signed in (the
	// token endpoint answered 401, or the server refused the token): a
	// path or an http(s) URL. Empty: the page shows no sign-in link.
	SignInURL string `json:"signInUrl,omitempty"`
}

// ErrConfig is wrapped by every error of Config.Validate.
var ErrConfig = errors.New("web: invalid page configuration")

// Validate reports a configuration the page cannot use. It does not
// change c; the empty Auth stands for AuthNone.
func (c Config) Validate() error {
	switch c.Auth {
	case "", AuthNone:
		if c.TokenURL != "" || c.SignInURL != "" {
			return fmt.Errorf("%w: a token URL (--token-url) and a sign-in URL (--sign-in-url) need auth %q (--auth jwt), not %q", ErrConfig, AuthJWT, AuthNone)
		}
	case AuthJWT:
	default:
		return fmt.Errorf("%w: unknown auth mode %q (known: %s, %s)", ErrConfig, c.Auth, AuthNone, AuthJWT)
	}
	if c.TokenURL != "" {
		if err := checkPath(c.TokenURL); err != nil {
			return fmt.Errorf("%w: token URL %q: %w (the page may fetch only from its own address; route the token server behind it, as deploy/Caddyfile does)", ErrConfig, c.TokenURL, err)
		}
	}
	if c.SignInURL != "" {
		if err := checkLink(c.SignInURL); err != nil {
			return fmt.Errorf("%w: sign-in URL %q: %w", ErrConfig, c.SignInURL, err)
		}
	}
	return nil
}

// checkPath accepts an absolute path without scheme or host, such as
// /auth/token or /auth/token?aud=chat.
func checkPath(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "" || u.Host != "" || strings.HasPrefix(s, "//") || !strings.HasPrefix(u.Path, "/") {
		return errors.New("want a path that starts with /, such as /auth/token")
	}
	return nil
}

// checkLink accepts a path or an absolute http(s) URL.
func checkLink(s string) error {
	if checkPath(s) == nil {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want a path that starts with / or an http(s) URL")
	}
	return nil
}

// ConfigHandler returns the handler of ConfigPath, which answers cfg as
// JSON (the empty Auth as AuthNone), never cached: a restart with other
// flags takes effect at the next page load.
func ConfigHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Auth == "" {
		cfg.Auth = AuthNone
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("web: page configuration: %w", err)
	}
	body = append(body, '\n')
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(body) // the client may be gone
	}), nil
}
