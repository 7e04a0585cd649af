package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/auth"
)

// logRecorder is a slog.Handler that keeps the messages of the records
// at warning level and above.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level < slog.LevelWarn {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

// count returns how many warnings contain s.
func (r *logRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// all returns every warning.
func (r *logRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// failingTransport fails every request, so that a JWKS URL on another
// host is never fetched.
type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in tests")
}

func TestVerifierWarnings(t *testing.T) {
	t.Parallel()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	js := &jwksServer{}
	js.set(map[string]ed25519.PublicKey{"k1": edPub})
	srv := httptest.NewServer(js)
	t.Cleanup(srv.Close)
	pubFile := writeFile(t, "ed.pem", pemPublic(t, edPub))
	secretFile := writeFile(t, "secret", testSecret)
	offline := &http.Client{Transport: failingTransport{}, Timeout: time.Second}
	const (
		audWarn  = "no --jwt-audience"
		httpWarn = "plain http"
	)
	tests := []struct {
		name           string
		cfg            auth.Config
		wantAud, wantH int
	}{
		{"jwks without audience", auth.Config{JWKSURL: srv.URL}, 1, 0},
		{"jwks with issuer, without audience", auth.Config{JWKSURL: srv.URL, Issuer: "https://id.example"}, 1, 0},
		{"jwks with audience", auth.Config{JWKSURL: srv.URL, Audience: "chat"}, 0, 0},
		{"public key without audience", auth.Config{PublicKeyFile: pubFile}, 1, 0},
		{"public key with audience", auth.Config{PublicKeyFile: pubFile, Audience: "chat"}, 0, 0},
		{"secret without audience", auth.Config{SecretFile: secretFile}, 0, 0},
		{"plain http to another host", auth.Config{JWKSURL: "http://id.example/jwks.json", Audience: "chat", HTTPClient: offline}, 0, 1},
		{"plain http to another host, no audience", auth.Config{JWKSURL: "http://10.1.2.3/jwks.json", HTTPClient: offline}, 1, 1},
		{"https to another host", auth.Config{JWKSURL: "https://id.example/jwks.json", Audience: "chat", HTTPClient: offline}, 0, 0},
		{"plain http to localhost", auth.Config{JWKSURL: "http://localhost:1/jwks.json", Audience: "chat", HTTPClient: offline}, 0, 0},
		{"plain http to ::1", auth.Config{JWKSURL: "http://[::1]:1/jwks.json", Audience: "chat", HTTPClient: offline}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &logRecorder{}
			cfg := tt.cfg
			cfg.Mode = auth.ModeJWT
			cfg.Logger = slog.New(rec)
			a, err := auth.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			if got := rec.count(audWarn); got != tt.wantAud {
				t.Errorf("got %d warnings saying %q, want %d; warnings: %q", got, audWarn, tt.wantAud, rec.all())
			}
			if got := rec.count(httpWarn); got != tt.wantH {
				t.Errorf("got %d warnings saying %q, want %d; warnings: %q", got, httpWarn, tt.wantH, rec.all())
			}
		})
	}
}

// gatedJWKS serves js, but while held a fetch waits until release, so
// that a fetch stays in flight for as long as the test needs.
type gatedJWKS struct {
	js      *jwksServer
	mu      sync.Mutex
	gate    chan struct{} // nil: not held
	entered chan struct{} // gets a value when a held fetch starts
}

func (g *gatedJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	g.js.ServeHTTP(w, r)
}

// hold makes later fetches wait until the returned function is called
// (once).
func (g *gatedJWKS) hold() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.gate = nil
			g.mu.Unlock()
			close(gate)
		})
	}
}

func newGatedJWKS(t *testing.T, keys map[string]ed25519.PublicKey) (*gatedJWKS, *httptest.Server) {
	t.Helper()
	g := &gatedJWKS{js: &jwksServer{}, entered: make(chan struct{}, 1)}
	g.js.set(keys)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

// verifyAll verifies token from n goroutines at once and returns their
// errors.
func verifyAll(v *auth.Verifier, token string, n int) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = v.Verify(token)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// During a rotation every token with the new kid waits for the one fetch
// the first of them starts, instead of failing while it is in flight.
func TestVerifyJWKSRotationConcurrent(t *testing.T) {
	t.Parallel()
	pub1, priv1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	_, priv3, _ := ed25519.GenerateKey(rand.Reader)
	g, v := gatedVerifier(t, map[string]ed25519.PublicKey{"k1": pub1}, nil)
	aud := jwt.MapClaims{"aud": "chat"}
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv1, claims(aud), "k1")); err != nil {
		t.Fatalf("k1: got %v, want valid", err)
	}
	before := g.js.fetches.Load()

	g.js.set(map[string]ed25519.PublicKey{"k1": pub1, "k2": pub2})
	release := g.hold()
	t.Cleanup(release) // before srv.Close, which waits for the handler
	k2 := sign(t, jwt.SigningMethodEdDSA, priv2, claims(aud), "k2")
	const n = 20
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		errs = verifyAll(v, k2, n)
	}()
	<-g.entered // the fetch for k2 is in flight and held
	// Give the other verifications time to reach the fetch in flight: the
	// test passes however long this is, but only fails without the fix
	// if they got there before it ends.
	time.Sleep(100 * time.Millisecond)
	release()
	<-done
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			t.Logf("refused: %v", err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d tokens with the freshly published kid refused, want all valid", failed, n)
	}
	if got := g.js.fetches.Load(); got != before+1 {
		t.Fatalf("got %d fetches for %d tokens with the new kid, want 1", got-before, n)
	}

	// Within the limit's interval, the refreshed set still answers...
	if _, err := v.Verify(k2); err != nil {
		t.Fatalf("k2 after the fetch: got %v, want valid", err)
	}
	// ...and made-up kids fail without another fetch.
	bogus := sign(t, jwt.SigningMethodEdDSA, priv3, claims(aud), "bogus")
	for _, err := range verifyAll(v, bogus, n) {
		if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "unknown signing key") {
			t.Fatalf("bogus kid: got %v, want unknown signing key", err)
		}
	}
	if got := g.js.fetches.Load(); got != before+1 {
		t.Fatalf("got %d fetches after %d bogus kids within the limit, want none", got-before-1, n)
	}
}

// A flood of made-up kids fetches the set once per JWKSUnknownKIDEvery,
// however many arrive while that fetch is in flight.
func TestVerifyJWKSBogusKIDFetchesOnce(t *testing.T) {
	t.Parallel()
	pub1, _, _ := ed25519.GenerateKey(rand.Reader)
	_, priv2, _ := ed25519.GenerateKey(rand.Reader)
	g, v := gatedVerifier(t, map[string]ed25519.PublicKey{"k1": pub1}, nil)
	before := g.js.fetches.Load()
	release := g.hold()
	t.Cleanup(release)
	bogus := sign(t, jwt.SigningMethodEdDSA, priv2, claims(jwt.MapClaims{"aud": "chat"}), "bogus")
	const n = 50
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		errs = verifyAll(v, bogus, n)
	}()
	<-g.entered
	release()
	<-done
	for _, err := range errs {
		if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "unknown signing key") {
			t.Fatalf("bogus kid: got %v, want unknown signing key", err)
		}
	}
	if got := g.js.fetches.Load(); got != before+1 {
		t.Fatalf("got %d fetches for %d bogus kids, want 1", got-before, n)
	}
}

// A verification waiting for a fetch in flight stops waiting when its
// context ends.
func TestVerifyJWKSWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	pub1, _, _ := ed25519.GenerateKey(rand.Reader)
	_, priv2, _ := ed25519.GenerateKey(rand.Reader)
	// A fetch that never times out in the test: only ctx can end the wait
	// (without that, the test hangs until go test's -timeout).
	g, v := gatedVerifier(t, map[string]ed25519.PublicKey{"k1": pub1}, &http.Client{Timeout: time.Hour})
	release := g.hold()
	t.Cleanup(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// The fetch this starts is held until cleanup, so only ctx can end
	// the wait.
	_, err := v.VerifyContext(ctx, sign(t, jwt.SigningMethodEdDSA, priv2, claims(jwt.MapClaims{"aud": "chat"}), "k2"))
	if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "unknown signing key") {
		t.Fatalf("got %v, want unknown signing key", err)
	}
}

// gatedVerifier returns a gated JWKS server holding keys and a verifier
// of it (audience "chat", one unknown-kid fetch per hour, client: nil for
// the default).
func gatedVerifier(t *testing.T, keys map[string]ed25519.PublicKey, client *http.Client) (*gatedJWKS, *auth.Verifier) {
	t.Helper()
	g, srv := newGatedJWKS(t, keys)
	v, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL, Audience: "chat",
		JWKSUnknownKIDEvery: time.Hour, HTTPClient: client, Logger: slog.New(&logRecorder{})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return g, v
}
