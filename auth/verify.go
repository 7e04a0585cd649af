package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// MinSecretBytes is the shortest HS256 secret accepted, after trimming.
const MinSecretBytes = 32

// ErrUnauthorized reports a token that is missing or fails verification;
// the error's text says why, without the token.
var ErrUnauthorized = errors.New("unauthorized")

// Verifier verifies tokens. It is safe for concurrent use. Close stops the
// JWKS refresh of a verifier made with Config.JWKSURL.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
	// keyfunc returns the keyfunc of one verification, whose waits for a
	// JWKS fetch end with ctx.
	keyfunc func(ctx context.Context) jwt.Keyfunc
	stop    func()
}

// NewVerifier returns the verifier of cfg, which must be in ModeJWT. It
// reads the key file, or starts fetching the JWKS (a JWKS that cannot be
// fetched yet is not an error: tokens fail until it can be). It logs a
// warning for a configuration that accepts more than it likely should: a
// public key or JWKS without an audience, a JWKS over plain http to
// another host.
func NewVerifier(cfg Config) (*Verifier, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode != ModeJWT {
		return nil, errors.New("auth: a verifier needs --auth jwt")
	}
	v := &Verifier{cfg: cfg, stop: func() {}}
	var methods []string
	switch {
	case cfg.SecretFile != "":
		secret, err := readSecret(cfg.SecretFile)
		if err != nil {
			return nil, err
		}
		methods = []string{jwt.SigningMethodHS256.Alg()}
		v.keyfunc = fixedKey(secret)
	case cfg.PublicKeyFile != "":
		key, alg, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		methods = []string{alg}
		v.keyfunc = fixedKey(key)
	default:
		keys, err := newJWKSKeys(cfg)
		if err != nil {
			return nil, err
		}
		v.stop = keys.close
		methods = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}
		v.keyfunc = keys.keyfunc
	}
	cfg.warnRisks()
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Close stops fetching the JWKS: it waits for a fetch for an unknown kid
// to end, and cancels the periodic refresh (which may still be finishing
// when Close returns). The verifier must not be used after.
func (v *Verifier) Close() { v.stop() }

// Verify checks token and returns the identity it carries. Its error wraps
// ErrUnauthorized and says why the token was refused; it never contains
// the token. It is VerifyContext without a deadline of its own: a token
// waiting for a JWKS fetch waits at most the fetch's timeout.
func (v *Verifier) Verify(token string) (Identity, error) {
	return v.VerifyContext(context.Background(), token)
}

// VerifyContext is Verify, but a token whose kid the JWKS does not hold
// stops waiting for the set to be fetched again when ctx ends (and fails
// with "unknown signing key").
func (v *Verifier) VerifyContext(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no token", ErrUnauthorized)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyfunc(ctx)); err != nil {
		return Identity{}, fmt.Errorf("%w: %s", ErrUnauthorized, reason(err))
	}
	id, err := identityFrom(claims)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	if !id.Expires.IsZero() {
		id.ValidUntil = id.Expires.Add(v.cfg.Leeway)
	}
	return id, nil
}

// fixedKey returns the keyfunc of a verifier with a single key.
func fixedKey(key any) func(context.Context) jwt.Keyfunc {
	kf := func(*jwt.Token) (any, error) { return key, nil }
	return func(context.Context) jwt.Keyfunc { return kf }
}

// jwksKeys finds the keys of tokens in the JWKS at Config.JWKSURL. The set
// is cached and fetched every JWKSRefreshInterval. A token whose kid the
// cache does not hold starts a fetch, unless one started within
// JWKSUnknownKIDEvery; it waits for the fetch in flight, if any (its own
// or another token's), and then looks in the cache again. So during a key
// rotation every token with the new kid waits for the one fetch, while a
// flood of made-up kids costs at most one fetch per JWKSUnknownKIDEvery
// and holds a connection at most one fetch's timeout.
type jwksKeys struct {
	// cache reads the cached set; it never fetches.
	cache keyfunc.Keyfunc
	// refetch is the same set, read through a client whose KeyRead of an
	// unknown kid fetches it again.
	refetch jwkset.Storage
	limit   *rate.Limiter
	// timeout bounds a fetch, and so a token's wait for it.
	timeout time.Duration
	// ctx ends with close, and with it the fetches.
	ctx  context.Context
	stop context.CancelFunc

	mu sync.Mutex
	// fetching is closed when the fetch in flight ends; nil: none is.
	fetching chan struct{}
	// closed is set by close; no fetch starts after.
	closed bool
	wg     sync.WaitGroup
}

func newJWKSKeys(cfg Config) (*jwksKeys, error) {
	timeout := cfg.HTTPClient.Timeout
	if timeout <= 0 {
		timeout = DefaultJWKSTimeout
	}
	ctx, stop := context.WithCancel(context.Background())
	fail := func(err error) (*jwksKeys, error) {
		stop()
		return nil, fmt.Errorf("auth: jwks %s: %w", cfg.JWKSURL, err)
	}
	store, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client: cfg.HTTPClient,
		Ctx:    ctx,
		// A set that cannot be fetched yet (its server starts after this
		// one) is fetched again by the next unknown kid.
		NoErrorReturnFirstHTTPReq: true,
		HTTPTimeout:               timeout,
		RefreshInterval:           cfg.JWKSRefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			cfg.Logger.Warn("auth: fetching the JWKS failed", "url", cfg.JWKSURL, "err", err)
		},
	})
	if err != nil {
		return fail(err)
	}
	urls := map[string]jwkset.Storage{cfg.JWKSURL: store}
	cached, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{HTTPURLs: urls})
	if err != nil {
		return fail(err)
	}
	refetch, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: urls,
		// k.limit decides whether to fetch; this limiter never waits.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return fail(err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: cached})
	if err != nil {
		return fail(err)
	}
	return &jwksKeys{
		cache:   kf,
		refetch: refetch,
		limit:   rate.NewLimiter(rate.Every(cfg.JWKSUnknownKIDEvery), 1),
		timeout: timeout,
		ctx:     ctx,
		stop:    stop,
	}, nil
}

// keyfunc returns the keyfunc of one verification, whose wait for a fetch
// ends with ctx.
func (k *jwksKeys) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(tok *jwt.Token) (any, error) {
		lookup := k.cache.KeyfuncCtx(ctx)
		key, err := lookup(tok)
		if !errors.Is(err, jwkset.ErrKeyNotFound) {
			return key, err
		}
		kid, _ := tok.Header[jwkset.HeaderKID].(string)
		if done := k.fetch(kid); done != nil {
			select {
			case <-done:
			case <-ctx.Done():
				return nil, fmt.Errorf("auth: waiting for the JWKS: %w", ctx.Err())
			}
		}
		// After the fetch; or without one, the limit refused: a fetch
		// may have ended since the first look.
		return lookup(tok)
	}
}

// fetch returns a channel closed when the fetch of the set in flight
// ends, starting one for kid if none is in flight and the limit allows;
// nil when none is in flight and the limit refuses, or after close.
func (k *jwksKeys) fetch(kid string) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fetching != nil {
		return k.fetching
	}
	if k.closed || !k.limit.Allow() {
		return nil
	}
	done := make(chan struct{})
	k.fetching = done
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		ctx, cancel := context.WithTimeout(k.ctx, k.timeout)
		defer cancel()
		// The set's RefreshErrorHandler logs a failed fetch; a kid the
		// new set does not hold either fails in keyfunc's second look.
		_, _ = k.refetch.KeyRead(ctx, kid)
		k.mu.Lock()
		k.fetching = nil
		k.mu.Unlock()
		close(done)
	}()
	return done
}

// close stops the periodic fetch and any fetch in flight, and waits for
// the latter.
func (k *jwksKeys) close() {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	k.stop()
	k.wg.Wait()
}

// reason explains a verification failure in a few words.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		return "signing algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable) && strings.Contains(err.Error(), "keyfunc"):
		return "unknown signing key"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signing algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		for _, c := range []string{"exp", "iss", "aud"} {
			if strings.Contains(err.Error(), c+" claim is required") {
				return "token has no " + c
			}
		}
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "invalid claims"
	}
	return "invalid token"
}

func readSecret(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth: jwt secret: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("auth: jwt secret %s has %d bytes; at least %d are needed", file, len(secret), MinSecretBytes)
	}
	return secret, nil
}

// readPublicKey reads a PEM public key and returns it with the only
// algorithm tokens signed by its private key may use.
func readPublicKey(file string) (any, string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("auth: jwt public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, "", fmt.Errorf("auth: jwt public key %s: no PEM block", file)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, "", fmt.Errorf("auth: jwt public key %s: PEM block %q is not a public key (known: PUBLIC KEY, RSA PUBLIC KEY, CERTIFICATE)", file, block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("auth: jwt public key %s: %w", file, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("auth: jwt public key %s: ECDSA curve %s; ES256 needs P-256", file, k.Curve.Params().Name)
		}
		return k, jwt.SigningMethodES256.Alg(), nil
	case ed25519.PublicKey:
		return k, jwt.SigningMethodEdDSA.Alg(), nil
	}
	return nil, "", fmt.Errorf("auth: jwt public key %s: %T keys are not supported (known: RSA, ECDSA P-256, Ed25519)", file, key)
}
