package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/web"
)

// jwtSecret signs the tokens of the sign-in tests; the instances verify
// with it.
const jwtSecret = "browser-test-secret-0123456789abcdef"

// Paths of the token server the sign-in tests put beside the instance,
// on the page's address as deploy/Caddyfile does.
const (
	testTokenURL  = "/auth/token"
	testSignInURL = "/auth/login"
)

// tokenEndpoint mints tokens for user, as a token server does for a
// signed-in session; it counts the tokens it gives out.
type tokenEndpoint struct {
	user, name string
	ttl        time.Duration
	// status, when not 200, is answered instead of a token.
	status int
	// secret signs the tokens; a wrong one makes tokens the server refuses.
	secret string
	calls  atomic.Int64
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	e.calls.Add(1)
	if e.status != 0 && e.status != http.StatusOK {
		http.Error(w, "not signed in", e.status)
		return
	}
	exp := time.Now().Add(e.ttl)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": e.user, "name": e.name, "exp": exp.Unix(),
	}).SignedString([]byte(e.secret))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "exp": exp.UTC()}) // the page may be gone
}

// startSignInSite starts an instance with --auth jwt and, in front of it on
// one address, the token endpoint at testTokenURL, and returns the address.
func startSignInSite(t *testing.T, tokens *tokenEndpoint) string {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(jwtSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := instanceConfig(t)
	cfg.Addr = "127.0.0.1:0"
	cfg.Auth = auth.Config{Mode: auth.ModeJWT, SecretFile: secretFile}
	cfg.Page = web.Config{TokenURL: testTokenURL, SignInURL: testSignInURL}
	in := startInstanceWith(t, cfg)
	target, err := url.Parse(in.url)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy keeps the Host the browser used, as Caddy does, so the
	// instance's same-origin check passes.
	mux := http.NewServeMux()
	mux.Handle(testTokenURL, tokens)
	mux.Handle("/", httputil.NewSingleHostReverseProxy(target))
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	return front.URL
}

// TestBrowserSignIn runs the page against servers with --auth jwt in
// headless Chromium.
func TestBrowserSignIn(t *testing.T) {
	b := newBrowser(t)
	scenarios := []struct {
		name string
		run  func(*testing.T, context.Context)
	}{
		{"signs in, chats and refreshes", signInAndChat},
		{"refused token", refusedToken},
		{"not signed in", notSignedIn},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, b)
		})
	}
}

// signInAndChat: the page has no name form; it fetches its token, shows
// the token's display name, chats as the token's user, and sends fresh
// tokens before they expire without reconnecting.
func signInAndChat(t *testing.T, b context.Context) {
	tokens := &tokenEndpoint{user: "alice", name: "Alice Liddell", ttl: 4 * time.Second, secret: jwtSecret}
	site := startSignInSite(t, tokens)
	p := newPage(t, b, "alice")
	p.do(chromedp.Navigate(site + "/#/lobby"))
	p.waitState("connected", wait)
	if eval[bool](p, `!document.getElementById('welcome').hidden`) {
		t.Error("the name form shows in jwt mode")
	}
	p.waitJS(`document.getElementById('me-name').textContent === 'Alice Liddell'`, "the signed-in name")
	if got := eval[string](p, `document.getElementById('me-sub').textContent`); got != "You · alice" {
		t.Errorf("me-sub: got %q, want %q", got, "You · alice")
	}
	if eval[bool](p, `!document.getElementById('change-name').hidden`) {
		t.Error("the change-name button shows in jwt mode")
	}

	p.send("signed in as alice")
	p.waitMessage("alice", "signed in as alice")
	if !eval[bool](p, messagesJS("alice", "signed in as alice")+`[0].classList.contains('own')`) {
		t.Error("the message is not marked as the signed-in user's own")
	}

	// A token lives 4 s and is refreshed a tenth of that before its exp:
	// after 2 lifetimes the page has fetched at least 3 and is still on
	// its first socket.
	p.waitJSFor(`document.getElementById('status').dataset.state === 'connected'`, "connected", wait)
	deadline := time.Now().Add(3 * tokens.ttl)
	for tokens.calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := tokens.calls.Load(); n < 3 {
		t.Fatalf("token fetches after %v: got %d, want at least 3 (refreshes)", 3*tokens.ttl, n)
	}
	if !eval[bool](p, `document.getElementById('status').dataset.state === 'connected'`) {
		t.Error("the page is not connected after refreshing its token")
	}
	p.send("still here after the refresh")
	p.waitMessage("alice", "still here after the refresh")
	if n := eval[int](p, `document.querySelectorAll('#messages .notice').length`); n != 0 {
		t.Errorf("notices (reconnects, resets) after refreshes: got %d, want none", n)
	}
	p.screenshot("signed-in")
}

// refusedToken: the token endpoint hands out tokens the server refuses;
// the page says why (close 4001) and does not try again.
func refusedToken(t *testing.T, b context.Context) {
	tokens := &tokenEndpoint{user: "mallory", ttl: time.Hour, secret: "not-the-server-secret-0123456789abcdef"}
	site := startSignInSite(t, tokens)
	p := newPage(t, b, "mallory")
	p.do(chromedp.Navigate(site + "/"))
	p.waitJS(`!document.getElementById('signed-out').hidden`, "the signed-out card")
	reason := eval[string](p, `document.getElementById('signed-out-reason').textContent`)
	if r, ok := strings.CutPrefix(reason, "The server refused your sign-in: "); !ok || len(r) < 3 || r == "the token was refused." {
		t.Errorf("reason: got %q, want the server's, after %q", reason, "The server refused your sign-in: ")
	}
	t.Logf("the page says: %s", reason)
	href := eval[string](p, `document.getElementById('sign-in-link').hidden ? '' : document.getElementById('sign-in-link').getAttribute('href')`)
	if href != testSignInURL {
		t.Errorf("sign-in link: got %q, want %q", href, testSignInURL)
	}
	// The page reconnects after 1 s at most (its backoff): three seconds
	// without a new token means it stopped.
	time.Sleep(3 * time.Second)
	if n := tokens.calls.Load(); n != 1 {
		t.Errorf("token fetches: got %d, want 1 (no retry after 4001)", n)
	}
	if !eval[bool](p, `document.getElementById('chat').hidden`) {
		t.Error("the chat shows beside the signed-out card")
	}
	p.screenshot("refused-token")
}

// notSignedIn: the token endpoint answers 401; the page says so and links
// to the sign-in form, without connecting.
func notSignedIn(t *testing.T, b context.Context) {
	tokens := &tokenEndpoint{status: http.StatusUnauthorized}
	site := startSignInSite(t, tokens)
	p := newPage(t, b, "nobody")
	p.allow(`status of 401`) // Chromium logs the token endpoint's answer
	p.do(chromedp.Navigate(site + "/"))
	p.waitJS(`!document.getElementById('signed-out').hidden`, "the signed-out card")
	if got := eval[string](p, `document.getElementById('signed-out-reason').textContent`); got != "You are not signed in." {
		t.Errorf("reason: got %q, want %q", got, "You are not signed in.")
	}
	if eval[bool](p, `document.getElementById('sign-in-link').hidden`) {
		t.Error("no sign-in link")
	}
	time.Sleep(2 * time.Second)
	if n := tokens.calls.Load(); n != 1 {
		t.Errorf("token fetches: got %d, want 1", n)
	}
}
