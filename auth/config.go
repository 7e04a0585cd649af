// Package auth provides chatstream's identities and room permissions: the
// name rules of user names, the verification of signed tokens (JWT) that
// name the user and the rooms it may join and send to, and room policies
// written as CEL rules.
//
// A server runs in one of two modes. ModeNone trusts the name a client
// gives (?user=), after the name rules (NormalizeUser). ModeJWT takes the
// user from a token verified by a Verifier; docs/PROTOCOL.md §3 says how
// a client presents it.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Modes of authentication.
const (
	// ModeNone trusts the ?user= of the upgrade request: anyone can use
	// any name that passes the name rules.
	ModeNone = "none"
	// ModeJWT requires a signed token naming the user (sub).
	ModeJWT = "jwt"
)

// Defaults of Config, also used by the command line's flags.
const (
	DefaultMode = ModeNone
	// DefaultLeeway is the clock skew allowed on exp and nbf.
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefreshInterval is how often a JWKS is fetched again.
	DefaultJWKSRefreshInterval = time.Hour
	// DefaultJWKSUnknownKIDEvery is the shortest interval between two
	// fetches of a JWKS caused by tokens with a key id it does not hold.
	DefaultJWKSUnknownKIDEvery = 5 * time.Second
	// DefaultJWKSTimeout bounds one fetch of a JWKS.
	DefaultJWKSTimeout = 10 * time.Second
)

// Config configures authentication. A zero field takes the default in its
// comment. In ModeJWT exactly one of SecretFile, PublicKeyFile and JWKSURL
// is required.
type Config struct {
	// Mode is ModeNone or ModeJWT. Default DefaultMode (ModeNone).
	Mode string
	// SecretFile holds the HS256 secret (at least 32 bytes; surrounding
	// white space is trimmed). Tokens must be HS256.
	SecretFile string
	// PublicKeyFile holds a PEM public key: RSA (tokens must be RS256),
	// ECDSA P-256 (ES256) or Ed25519 (EdDSA).
	PublicKeyFile string
	// JWKSURL is the URL of a JSON Web Key Set; tokens must be RS256,
	// ES256 or EdDSA and name a key of the set by kid. The set is cached,
	// fetched again every JWKSRefreshInterval, and on a token whose kid it
	// does not hold, at most once every JWKSUnknownKIDEvery: tokens that
	// arrive while that fetch is in flight wait for it (at most its
	// timeout) and are then checked against the new set. A plain http URL
	// to a host that is not loopback makes the verifier log a warning.
	JWKSURL string
	// Issuer, when set, is the iss every token must carry.
	Issuer string
	// Audience, when set, must be one of every token's aud. Without it a
	// token for any audience is accepted: with PublicKeyFile or JWKSURL,
	// whose issuer usually signs tokens for other applications too, the
	// verifier logs a warning at start.
	Audience string
	// Leeway is the clock skew allowed on exp and nbf. Default
	// DefaultLeeway.
	Leeway time.Duration
	// JWKSRefreshInterval is how often the JWKS is fetched again. Default
	// DefaultJWKSRefreshInterval.
	JWKSRefreshInterval time.Duration
	// JWKSUnknownKIDEvery is the shortest interval between fetches of the
	// JWKS caused by unknown kids. Default DefaultJWKSUnknownKIDEvery.
	JWKSUnknownKIDEvery time.Duration
	// HTTPClient fetches the JWKS. Default: a client with a timeout of
	// DefaultJWKSTimeout.
	HTTPClient *http.Client
	// RoomsPolicy is a rooms policy file (LoadPolicy); empty: none. It
	// applies in both modes, after the token's own rooms and publish.
	RoomsPolicy string
	// Logger logs key fetches and policy failures, never tokens. Default
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.JWKSRefreshInterval == 0 {
		c.JWKSRefreshInterval = DefaultJWKSRefreshInterval
	}
	if c.JWKSUnknownKIDEvery == 0 {
		c.JWKSUnknownKIDEvery = DefaultJWKSUnknownKIDEvery
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultJWKSTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Check reports a configuration that cannot work, as Validate does after
// the defaults are filled in (New fills them in itself): the flags'
// combination, before any key is read.
func (c Config) Check() error {
	c.setDefaults()
	return c.Validate()
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in.
func (c Config) Validate() error {
	keys := 0
	for _, k := range []string{c.SecretFile, c.PublicKeyFile, c.JWKSURL} {
		if k != "" {
			keys++
		}
	}
	switch c.Mode {
	case ModeNone:
		if keys > 0 || c.Issuer != "" || c.Audience != "" {
			return errors.New("auth: --jwt-secret-file, --jwt-public-key-file, --jwks-url, --jwt-issuer and --jwt-audience need --auth jwt")
		}
	case ModeJWT:
		if keys != 1 {
			return errors.New("auth: --auth jwt needs exactly one of --jwt-secret-file, --jwt-public-key-file and --jwks-url")
		}
	default:
		return fmt.Errorf("auth: mode %q is unknown (known: %s, %s)", c.Mode, ModeNone, ModeJWT)
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("auth: jwks url %q is not an http(s) URL", c.JWKSURL)
		}
	}
	if c.Leeway < 0 || c.JWKSRefreshInterval <= 0 || c.JWKSUnknownKIDEvery <= 0 {
		return errors.New("auth: leeway must not be negative, JWKS intervals must be positive")
	}
	return nil
}

// warnRisks logs, once, a warning for each way a ModeJWT configuration
// whose defaults are filled in accepts more than its operator likely
// means: a public key or JWKS (an identity provider that signs tokens for
// other applications too) without an audience, and a JWKS fetched over
// plain http from a host that is not loopback (anyone on the path can
// put keys in it).
func (c Config) warnRisks() {
	if (c.PublicKeyFile != "" || c.JWKSURL != "") && c.Audience == "" {
		key, src := "--jwt-public-key-file", c.PublicKeyFile
		if c.JWKSURL != "" {
			key, src = "--jwks-url", c.JWKSURL
		}
		issuer := c.Issuer
		if issuer == "" {
			issuer = "(any: no --jwt-issuer)"
		}
		c.Logger.Warn("auth: no --jwt-audience: every token the issuer signs, for any audience (another application's too), is accepted as a chat login; set --jwt-audience to the aud of chatstream's tokens",
			"key", key, "source", src, "issuer", issuer)
	}
	if c.JWKSURL != "" && plainHTTPToRemote(c.JWKSURL) {
		c.Logger.Warn("auth: --jwks-url is plain http to a host that is not loopback: anyone on the network path can put their own signing keys in the set and sign any token; use https",
			"url", c.JWKSURL)
	}
}

// plainHTTPToRemote reports whether raw is an http (not https) URL whose
// host is neither localhost nor a loopback address.
func plainHTTPToRemote(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
