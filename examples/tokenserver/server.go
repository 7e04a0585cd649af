package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults of Config, also the flags' defaults.
const (
	// DefaultTokenTTL is a token's lifetime: short, as the page fetches a
	// fresh one before it expires.
	DefaultTokenTTL = 15 * time.Minute
	// DefaultSessionTTL is how long a sign-in lasts.
	DefaultSessionTTL = 12 * time.Hour
	// DefaultMaxSessions is the most sign-ins kept at once.
	DefaultMaxSessions = 10_000
	// MinSecretBytes is the shortest secret, after trimming white space;
	// chatstream refuses shorter ones too.
	MinSecretBytes = 32
	// CookieName is the session cookie's name.
	CookieName = "tokenserver_session"
	// maxFormBytes bounds a sign-in form.
	maxFormBytes = 4 << 10
)

// Config configures a Server. A zero field takes the default in its
// comment.
type Config struct {
	// UsersFile lists the accounts (loadUsers). Required.
	UsersFile string
	// SecretFile holds the HS256 secret chatstream verifies tokens with.
	// Required.
	SecretFile string
	// TokenTTL is a token's lifetime. Default DefaultTokenTTL.
	TokenTTL time.Duration
	// SessionTTL is a sign-in's lifetime. Default DefaultSessionTTL.
	SessionTTL time.Duration
	// MaxSessions bounds the sign-ins kept at once. Default
	// DefaultMaxSessions.
	MaxSessions int
	// Issuer and Audience, when set, become every token's iss and aud.
	Issuer, Audience string
	// SecureCookie marks the session cookie Secure (HTTPS only).
	SecureCookie bool
	// Logger logs sign-ins, never passwords or tokens. Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.UsersFile == "":
		return errors.New("a users file is required (--users)")
	case c.SecretFile == "":
		return errors.New("a secret file is required (--secret-file)")
	case c.TokenTTL < 0 || c.SessionTTL < 0 || c.MaxSessions < 0:
		return errors.New("lifetimes and limits must not be negative")
	}
	return nil
}

// Server is the token server's HTTP handler.
type Server struct {
	cfg      Config
	secret   []byte
	users    users
	sessions *sessions
	mux      *http.ServeMux
}

// New reads the users and the secret and returns the server.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	us, err := loadUsers(cfg.UsersFile)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(cfg.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("secret file %s: %d bytes, at least %d are needed", cfg.SecretFile, len(secret), MinSecretBytes)
	}
	s := &Server{cfg: cfg, secret: secret, users: us, sessions: newSessions(cfg.SessionTTL, cfg.MaxSessions), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /auth/login", s.loginForm)
	s.mux.HandleFunc("POST /auth/login", s.login)
	s.mux.HandleFunc("POST /auth/logout", s.logout)
	s.mux.HandleFunc("POST /auth/token", s.token)
	return s, nil
}

// ServeHTTP serves the sign-in form, the sign-in, the sign-out and the
// token endpoint under /auth/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

var formPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · chatstream</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 22rem; margin: 4rem auto; padding: 0 1rem">
<h1>Sign in</h1>
{{if .Error}}<p id="error" role="alert" style="color: #b00020">{{.Error}}</p>{{end}}
<form method="post" action="/auth/login">
<input type="hidden" name="next" value="{{.Next}}">
<p><label>User name<br><input id="user" name="user" value="{{.User}}" autocomplete="username" required autofocus></label></p>
<p><label>Password<br><input id="password" name="password" type="password" autocomplete="current-password" required></label></p>
<p><button id="submit" type="submit">Sign in</button></p>
</form></body></html>
`))

type formData struct{ Error, User, Next string }

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, formData{Next: localPath(r.URL.Query().Get("next"))})
}

func (s *Server) render(w http.ResponseWriter, status int, d formData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = formPage.Execute(w, d) // the client may be gone
}

// login checks the form's user and password, starts a session and
// redirects to next (a path on this address; default /).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	name, next := r.PostForm.Get("user"), localPath(r.PostForm.Get("next"))
	u, ok := s.users.check(name, r.PostForm.Get("password"))
	if !ok {
		s.cfg.Logger.Info("sign-in refused", "user", name)
		s.render(w, http.StatusUnauthorized, formData{Error: "Wrong user name or password.", User: name, Next: next})
		return
	}
	id, err := s.sessions.create(u.name, s.cfg.Now())
	if err != nil {
		http.Error(w, "cannot sign in now: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/auth/", MaxAge: int(s.cfg.SessionTTL.Seconds()),
		HttpOnly: true, Secure: s.cfg.SecureCookie, SameSite: http.SameSiteLaxMode,
	})
	s.cfg.Logger.Info("signed in", "user", u.name)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session and returns to the sign-in form.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		s.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.SecureCookie, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/auth/login", http.StatusSeeOther)
}

// tokenReply is the token endpoint's answer.
type tokenReply struct {
	Token string    `json:"token"`
	Exp   time.Time `json:"exp"`
}

// token answers a signed-in session with a fresh token, and anything else
// with 401. A request from another site is refused (403): the cookie is
// SameSite=Lax, which already keeps it off cross-site POSTs, and the
// Origin check says so plainly.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && !sameHost(o, r.Host) {
		jsonError(w, http.StatusForbidden, "cross-origin token requests are refused")
		return
	}
	c, err := r.Cookie(CookieName)
	var name string
	ok := err == nil
	if ok {
		name, ok = s.sessions.user(c.Value, s.cfg.Now())
	}
	if !ok {
		jsonError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	u := s.users.byName[name]
	now := s.cfg.Now()
	exp := now.Add(s.cfg.TokenTTL)
	claims := jwt.MapClaims{"sub": u.name, "iat": now.Unix(), "exp": exp.Unix()}
	if u.title != "" {
		claims["name"] = u.title
	}
	if u.rooms != nil {
		claims["rooms"] = u.rooms
	}
	if s.cfg.Issuer != "" {
		claims["iss"] = s.cfg.Issuer
	}
	if s.cfg.Audience != "" {
		claims["aud"] = s.cfg.Audience
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	if err != nil {
		jsonError(w, http.StatusInternalServerError, "cannot sign a token")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(tokenReply{Token: tok, Exp: time.Unix(exp.Unix(), 0).UTC()}) // the client may be gone
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg}) // the client may be gone
}

// localPath returns next when it is a path on this address, else "/": a
// sign-in never redirects to another site.
func localPath(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, `\`) {
		return "/"
	}
	return next
}

// sameHost reports whether origin (scheme://host[:port]) names host.
func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host == host
}
