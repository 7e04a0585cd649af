package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/auth"
)

const testSecret = "0123456789abcdef0123456789abcdef-test"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func hsVerifier(t *testing.T, mod func(*auth.Config)) *auth.Verifier {
	t.Helper()
	cfg := auth.Config{Mode: auth.ModeJWT, SecretFile: writeFile(t, "secret", testSecret+"\n")}
	if mod != nil {
		mod(&cfg)
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// noneToken is a token with alg none, which must never verify.
func noneToken(c jwt.MapClaims) string {
	s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	return s
}

func TestVerifyHS256(t *testing.T) {
	t.Parallel()
	v := hsVerifier(t, func(c *auth.Config) { c.Issuer = "https://id.example"; c.Audience = "chat" })
	good := jwt.MapClaims{"iss": "https://id.example", "aud": "chat"}
	key := []byte(testSecret)
	tests := []struct {
		name  string
		token string
		want  string // "" = valid; else part of the reason
	}{
		{"valid", sign(t, jwt.SigningMethodHS256, key, claims(good), ""), ""},
		{"expired", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})), ""), "token expired"},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"exp": time.Now().Add(-10 * time.Second).Unix()})), ""), ""},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"nbf": time.Now().Add(time.Minute).Unix()})), ""), "not valid yet"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"iss": "https://evil.example"})), ""), "wrong issuer"},
		{"no issuer", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"iss": nil})), ""), "no iss"},
		{"no audience", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"aud": nil})), ""), "no aud"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"aud": "other"})), ""), "wrong audience"},
		{"audience in a list", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"aud": []string{"other", "chat"}})), ""), ""},
		{"bad signature", sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), claims(good), ""), "bad signature"},
		{"alg none", noneToken(claims(good)), "signing algorithm not allowed"},
		{"HS384", sign(t, jwt.SigningMethodHS384, key, claims(good), ""), "signing algorithm not allowed"},
		{"missing exp", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"exp": nil})), ""), "no exp"},
		{"missing sub", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"sub": nil})), ""), "no sub"},
		{"invisible sub", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"sub": "\u3164"})), ""), "HANGUL FILLER"},
		{"bidi sub", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"sub": "bob\u202Eecila"})), ""), "bidirectional"},
		{"bad name", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"name": "\u2800"})), ""), "BRAILLE"},
		{"bad rooms", sign(t, jwt.SigningMethodHS256, key, claims(merge(good, jwt.MapClaims{"rooms": []any{"team-["}})), ""), "rooms"},
		{"malformed", "not.a.token", "malformed"},
		{"empty", "", "no token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a valid token", err)
				}
				if id.User != "alice" {
					t.Fatalf("got user %q, want alice", id.User)
				}
				return
			}
			if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrUnauthorized saying %q", err, tt.want)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatalf("the error %q quotes the token", err)
			}
		})
	}
}

// TestVerifyValidUntil: an identity is valid until its exp plus the
// verifier's leeway, which is also how long past exp a token is accepted.
func TestVerifyValidUntil(t *testing.T) {
	t.Parallel()
	for _, leeway := range []time.Duration{0, 2 * time.Minute} {
		v := hsVerifier(t, func(c *auth.Config) { c.Leeway = leeway })
		want := leeway
		if want == 0 {
			want = auth.DefaultLeeway
		}
		exp := time.Now().Add(-want + 5*time.Second).Truncate(time.Second)
		id, err := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(jwt.MapClaims{"exp": exp.Unix()}), ""))
		if err != nil {
			t.Fatalf("leeway %v: a token %v past exp: %v", leeway, time.Since(exp).Round(time.Second), err)
		}
		if !id.Expires.Equal(exp) || !id.ValidUntil.Equal(exp.Add(want)) {
			t.Fatalf("leeway %v: expires %v, valid until %v; want %v and %v", leeway, id.Expires, id.ValidUntil, exp, exp.Add(want))
		}
	}
}

func merge(a, b jwt.MapClaims) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestVerifyClaims(t *testing.T) {
	t.Parallel()
	v := hsVerifier(t, nil)
	key := []byte(testSecret)
	id, err := v.Verify(sign(t, jwt.SigningMethodHS256, key, claims(jwt.MapClaims{
		"sub": "ａｌｉｃｅ", "name": "Alice Liddell", "rooms": []any{"lobby", "team-*"}, "role": "vip", "level": 3,
	}), ""))
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "alice" || id.Name != "Alice Liddell" {
		t.Fatalf("got user %q name %q, want alice (NFKC) and Alice Liddell", id.User, id.Name)
	}
	if id.Expires.Before(time.Now()) {
		t.Fatalf("got expiry %v, want the token's exp", id.Expires)
	}
	for room, want := range map[string]bool{"lobby": true, "team-red": true, "team": false, "vip": false} {
		if got := id.CanJoin(room); got != want {
			t.Errorf("CanJoin(%s) = %v, want %v", room, got, want)
		}
		if got := id.CanPublish(room); got != want {
			t.Errorf("CanPublish(%s) = %v, want %v (publish defaults to rooms)", room, got, want)
		}
	}
	if id.Meta["claim.role"] != "vip" || len(id.Meta) != 1 {
		t.Fatalf("got meta %v, want only claim.role=vip (string claims that are not registered)", id.Meta)
	}

	id, err = v.Verify(sign(t, jwt.SigningMethodHS256, key, claims(jwt.MapClaims{"rooms": "lobby, news", "publish": []any{}}), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !id.CanJoin("news") || id.CanPublish("lobby") || id.CanJoin("other") {
		t.Fatalf("rooms %q publish %q: want join lobby and news, publish nowhere", id.Rooms, id.Publish)
	}
	id, err = v.Verify(sign(t, jwt.SigningMethodHS256, key, claims(nil), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !id.CanJoin("anything") || !id.CanPublish("anything") {
		t.Fatal("a token without rooms must allow every room")
	}
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemPublic(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestVerifyPublicKey(t *testing.T) {
	t.Parallel()
	rk := rsaKey(t)
	rsaPEM := pemPublic(t, &rk.PublicKey)
	rv, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, PublicKeyFile: writeFile(t, "rsa.pem", rsaPEM)})
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ev, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, PublicKeyFile: writeFile(t, "ed.pem", pemPublic(t, edPub))})
	if err != nil {
		t.Fatal(err)
	}
	other := rsaKey(t)
	tests := []struct {
		name  string
		v     *auth.Verifier
		token string
		want  string
	}{
		{"RS256", rv, sign(t, jwt.SigningMethodRS256, rk, claims(nil), ""), ""},
		{"RS256 other key", rv, sign(t, jwt.SigningMethodRS256, other, claims(nil), ""), "bad signature"},
		// The classic confusion: an HS256 token whose secret is the RSA
		// public key's PEM, which a verifier that trusts alg would accept.
		{"HS256 signed with the public key", rv, sign(t, jwt.SigningMethodHS256, []byte(rsaPEM), claims(nil), ""), "signing algorithm not allowed"},
		{"PS256", rv, sign(t, jwt.SigningMethodPS256, rk, claims(nil), ""), "signing algorithm not allowed"},
		{"alg none", rv, noneToken(claims(nil)), "signing algorithm not allowed"},
		{"EdDSA", ev, sign(t, jwt.SigningMethodEdDSA, edPriv, claims(nil), ""), ""},
		{"RS256 against Ed25519", ev, sign(t, jwt.SigningMethodRS256, rk, claims(nil), ""), "signing algorithm not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrUnauthorized saying %q", err, tt.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	short := writeFile(t, "short", "too short\n")
	notPEM := writeFile(t, "key", "hello")
	tests := []struct {
		name string
		cfg  auth.Config
		want string
	}{
		{"unknown mode", auth.Config{Mode: "ldap"}, `mode "ldap" is unknown`},
		{"jwt without key", auth.Config{Mode: auth.ModeJWT}, "exactly one of"},
		{"two keys", auth.Config{Mode: auth.ModeJWT, SecretFile: short, JWKSURL: "https://x/jwks"}, "exactly one of"},
		{"key without jwt", auth.Config{SecretFile: short}, "need --auth jwt"},
		{"short secret", auth.Config{Mode: auth.ModeJWT, SecretFile: short}, "at least 32"},
		{"missing secret", auth.Config{Mode: auth.ModeJWT, SecretFile: short + ".nope"}, "no such file"},
		{"not PEM", auth.Config{Mode: auth.ModeJWT, PublicKeyFile: notPEM}, "no PEM block"},
		{"bad jwks url", auth.Config{Mode: auth.ModeJWT, JWKSURL: "ftp://x"}, "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewVerifier(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// jwksServer serves a JWK Set of Ed25519 keys that the test can rotate,
// and counts the fetches.
type jwksServer struct {
	mu      sync.Mutex
	keys    map[string]ed25519.PublicKey
	fetches atomic.Int64
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for kid, k := range s.keys {
		set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k), Kid: kid, Alg: "EdDSA", Use: "sig"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set) // the test fails on its own if this does
}

func (s *jwksServer) set(keys map[string]ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

func TestVerifyJWKSRotation(t *testing.T) {
	t.Parallel()
	pub1, priv1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	pub3, priv3, _ := ed25519.GenerateKey(rand.Reader)
	js := &jwksServer{}
	js.set(map[string]ed25519.PublicKey{"k1": pub1})
	srv := httptest.NewServer(js)
	t.Cleanup(srv.Close)
	// Long enough that the 20 refusals below fit in it on a loaded
	// machine; the last step waits it out.
	const every = 3 * time.Second
	v, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL, JWKSUnknownKIDEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv1, claims(nil), "k1")); err != nil {
		t.Fatalf("k1: got %v, want valid", err)
	}
	// An HS256 token can never pass a JWKS verifier, whatever its kid.
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(nil), "k1")); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("HS256 against a JWKS: got %v, want ErrUnauthorized", err)
	}
	before := js.fetches.Load()

	// The issuer rotates to k2: the first token with k2 refetches the set.
	js.set(map[string]ed25519.PublicKey{"k1": pub1, "k2": pub2})
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv2, claims(nil), "k2")); err != nil {
		t.Fatalf("k2 after rotation: got %v, want valid (unknown kid refetches)", err)
	}
	if got := js.fetches.Load(); got != before+1 {
		t.Fatalf("got %d fetches after the unknown kid, want %d", got, before+1)
	}

	// Unknown kids right after do not refetch: the rate limit holds.
	nope := sign(t, jwt.SigningMethodEdDSA, priv3, claims(nil), "nope")
	for range 20 {
		if _, err := v.Verify(nope); !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "unknown signing key") {
			t.Fatalf("unknown kid: got %v, want unknown signing key", err)
		}
	}
	if got := js.fetches.Load(); got != before+1 {
		t.Fatalf("got %d fetches after 20 unknown kids within the limit, want still %d", got, before+1)
	}

	// After the interval, a new key is fetched once more.
	js.set(map[string]ed25519.PublicKey{"k3": pub3})
	deadline := time.Now().Add(3 * every)
	for {
		_, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv3, claims(nil), "k3"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("k3: got %v, want valid once the refetch limit allows", err)
		}
		time.Sleep(every / 4)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv1, claims(nil), "k1")); err == nil {
		t.Fatal("k1 after it left the set: got valid, want refused")
	}
}
