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
	cfg     Config
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
	stop    context.CancelFunc
}

// NewVerifier returns the verifier of cfg, which must be in ModeJWT. It
// reads the key file, or starts fetching the JWKS (a JWKS that cannot be
// fetched yet is not an error: tokens fail until it can be).
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
		v.keyfunc = func(*jwt.Token) (any, error) { return secret, nil }
	case cfg.PublicKeyFile != "":
		key, alg, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		methods = []string{alg}
		v.keyfunc = func(*jwt.Token) (any, error) { return key, nil }
	default:
		kf, stop, err := jwksKeyfunc(cfg)
		if err != nil {
			return nil, err
		}
		v.stop = stop
		methods = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}
		v.keyfunc = kf
	}
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

// Close stops fetching the JWKS. The verifier must not be used after.
func (v *Verifier) Close() { v.stop() }

// Verify checks token and returns the identity it carries. Its error wraps
// ErrUnauthorized and says why the token was refused; it never contains
// the token.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no token", ErrUnauthorized)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyfunc); err != nil {
		return Identity{}, fmt.Errorf("%w: %s", ErrUnauthorized, reason(err))
	}
	id, err := identityFrom(claims)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return id, nil
}

// jwksKeyfunc returns the keyfunc of cfg.JWKSURL and the function that
// stops its refresh goroutine. The set is fetched every
// JWKSRefreshInterval; a token whose kid the set does not hold fetches it
// again at once, unless another did within JWKSUnknownKIDEvery: then it
// fails without waiting, so a flood of made-up kids costs one fetch per
// interval and never holds a connection.
func jwksKeyfunc(cfg Config) (jwt.Keyfunc, context.CancelFunc, error) {
	ctx, stop := context.WithCancel(context.Background())
	store, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client: cfg.HTTPClient,
		Ctx:    ctx,
		// A set that cannot be fetched yet (its server starts after this
		// one) is fetched again by the next unknown kid.
		NoErrorReturnFirstHTTPReq: true,
		HTTPTimeout:               cfg.HTTPClient.Timeout,
		RefreshInterval:           cfg.JWKSRefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			cfg.Logger.Warn("auth: fetching the JWKS failed", "url", cfg.JWKSURL, "err", err)
		},
	})
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("auth: jwks %s: %w", cfg.JWKSURL, err)
	}
	fail := func(err error) (jwt.Keyfunc, context.CancelFunc, error) {
		stop()
		return nil, nil, fmt.Errorf("auth: jwks %s: %w", cfg.JWKSURL, err)
	}
	urls := map[string]jwkset.Storage{cfg.JWKSURL: store}
	cached, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{HTTPURLs: urls})
	if err != nil {
		return fail(err)
	}
	refetching, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: urls,
		// limit below decides; this limiter never waits.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		RateLimitWaitMax:  cfg.HTTPClient.Timeout,
	})
	if err != nil {
		return fail(err)
	}
	fromCache, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: cached})
	if err != nil {
		return fail(err)
	}
	refetch, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: refetching})
	if err != nil {
		return fail(err)
	}
	limit := rate.NewLimiter(rate.Every(cfg.JWKSUnknownKIDEvery), 1)
	return func(tok *jwt.Token) (any, error) {
		key, err := fromCache.Keyfunc(tok)
		if err == nil || !errors.Is(err, jwkset.ErrKeyNotFound) || !limit.Allow() {
			return key, err
		}
		return refetch.Keyfunc(tok)
	}, stop, nil
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
