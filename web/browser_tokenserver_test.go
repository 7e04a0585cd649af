package web_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/web"
)

// buildWait bounds building the example token server.
const buildWait = 3 * time.Minute

// tokenServerUser is an account of the users file the test writes for the
// example token server.
type tokenServerUser struct {
	user, password, title, rooms string
}

// The accounts of the token server test: alice may use every room, bob the
// lobby and the team-* rooms (the token's rooms claim).
var (
	tsAlice = tokenServerUser{user: "alice", password: "wonderland", title: "Alice Liddell"}
	tsBob   = tokenServerUser{user: "bob", password: "builder", title: "Bob the Builder", rooms: "lobby,team-*"}
)

// startTokenServer builds examples/tokenserver, runs it on a free loopback
// port with a users file of accounts and secretFile, and stops it in
// t.Cleanup. It returns the server's base URL.
func startTokenServer(t *testing.T, secretFile string, accounts ...tokenServerUser) string {
	t.Helper()
	goTool := requireTool(t, "go", "go")
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenserver")
	bctx, cancelBuild := context.WithTimeout(context.Background(), buildWait)
	defer cancelBuild()
	build := exec.CommandContext(bctx, goTool, "build", "-o", bin, "./examples/tokenserver")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/tokenserver: %v\n%s", err, out)
	}

	var users string
	for _, a := range accounts {
		h, err := bcrypt.GenerateFromPassword([]byte(a.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		users += fmt.Sprintf("%s:%s:%s:%s\n", a.user, h, a.title, a.rooms)
	}
	usersFile := filepath.Join(dir, "users.txt")
	if err := os.WriteFile(usersFile, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}

	// A free port: the token server takes an address, not a listener.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "tokenserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--addr", addr, "--users", usersFile, "--secret-file", secretFile, "--ttl", "10m")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start the token server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		if err := <-exited; err != nil && ctx.Err() == nil {
			t.Errorf("token server: %v", err)
		}
		_ = logFile.Close() // only read below
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("token server log:\n%s", b)
			}
		}
	})

	base := "http://" + addr
	deadline := time.Now().Add(wait)
	for {
		res, err := http.Get(base + testSignInURL)
		if err == nil {
			_ = res.Body.Close() // only the status matters
			if res.StatusCode == http.StatusOK {
				return base
			}
			err = fmt.Errorf("GET %s: %s", testSignInURL, res.Status)
		}
		select {
		case werr := <-exited:
			exited <- werr // for the cleanup
			t.Fatalf("the token server exited while starting: %v", werr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the token server did not answer within %s: %v", wait, err)
		}
	}
}

// startTokenServerSite runs the example token server and an instance with
// --auth jwt verifying its tokens, both behind one address as
// deploy/Caddyfile puts them (/auth/* to the token server, the rest to the
// instance), and returns that address.
func startTokenServerSite(t *testing.T) string {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(jwtSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := url.Parse(startTokenServer(t, secretFile, tsAlice, tsBob))
	if err != nil {
		t.Fatal(err)
	}
	cfg := instanceConfig(t)
	cfg.Addr = "127.0.0.1:0"
	cfg.Auth = auth.Config{Mode: auth.ModeJWT, SecretFile: secretFile}
	cfg.Page = web.Config{TokenURL: testTokenURL, SignInURL: testSignInURL}
	chat, err := url.Parse(startInstanceWith(t, cfg).url)
	if err != nil {
		t.Fatal(err)
	}
	// Both proxies keep the Host the browser used, as Caddy does: the
	// instance's same-origin check and the token server's Origin check
	// see the page's address.
	mux := http.NewServeMux()
	mux.Handle("/auth/", httputil.NewSingleHostReverseProxy(tokens))
	mux.Handle("/", httputil.NewSingleHostReverseProxy(chat))
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	return front.URL
}

// waitThroughNavigation waits until expr is truthy in p while p may be
// navigating: a poll that a navigation interrupts is started again on the
// new document.
func (p *chatPage) waitThroughNavigation(expr, what string) {
	p.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		ctx, cancel := context.WithTimeout(p.ctx, left+time.Second)
		poll := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(left), chromedp.WithPollingInterval(25*time.Millisecond))
		_, err := chromedp.Run(ctx, poll)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, chromedp.ErrPollingTimeout) || time.Now().After(deadline) {
			p.t.Fatalf("%s: waiting for %s: %v (the page: %s)", p.name, what, err, p.where())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// where describes the page for a failure: its path and the message it
// shows, the signed-out card's or the sign-in form's.
func (p *chatPage) where() string {
	ctx, cancel := context.WithTimeout(p.ctx, time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + ': ' +
		((document.getElementById('signed-out')?.hidden === false && document.getElementById('signed-out-reason').textContent)
		|| document.getElementById('error')?.textContent || document.getElementById('status')?.dataset.state || '')`))
	if err != nil {
		return fmt.Sprintf("unknown: %v", err)
	}
	return v
}

// onSignInForm is true on the token server's form, with its error when
// wantError.
func onSignInForm(wantError bool) string {
	e := `!document.getElementById('error')`
	if wantError {
		e = `document.getElementById('error')?.textContent === 'Wrong user name or password.'`
	}
	return fmt.Sprintf(`location.pathname === %s && !!document.getElementById('password') && %s`, js(testSignInURL), e)
}

// signedInAs is true on the chat page once it is connected as a.
func signedInAs(a tokenServerUser) string {
	return fmt.Sprintf(`location.pathname === '/' && document.getElementById('status')?.dataset.state === 'connected'
		&& document.getElementById('me-name').textContent === %s`, js(a.title))
}

// openSignedOut opens the chat page, which is signed out, and follows its
// sign-in link to the token server's form.
func openSignedOut(t *testing.T, p *chatPage, site string) {
	t.Helper()
	p.do(chromedp.Navigate(site + "/"))
	p.waitJS(`!document.getElementById('signed-out').hidden`, "the signed-out card")
	if got := eval[string](p, `document.getElementById('signed-out-reason').textContent`); got != "You are not signed in." {
		t.Errorf("%s: reason: got %q, want %q", p.name, got, "You are not signed in.")
	}
	if !eval[bool](p, `document.getElementById('chat').hidden`) {
		t.Errorf("%s: the chat shows while signed out", p.name)
	}
	p.do(chromedp.Click(chromedp.ID("sign-in-link")))
	p.waitThroughNavigation(onSignInForm(false), "the token server's sign-in form")
}

// submitSignIn fills the token server's form and submits it.
func submitSignIn(p *chatPage, user, password string) {
	p.t.Helper()
	// After a wrong password the form keeps the user name.
	_ = eval[bool](p, `(document.getElementById('user').value = '') === ''`)
	p.do(
		chromedp.SendKeys(chromedp.ID("user"), user),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("submit")),
	)
}

// TestBrowserSignInThroughTokenServer signs two pages in through the
// example token server (examples/tokenserver, built and run as compose
// runs it): the page, signed out, links to the token server's form; the
// form sets the session cookie; the page fetches its token from the token
// endpoint with that cookie, shows the token's display name and chats; a
// message reaches the other user's page. A wrong password stays on the
// form with its error.
func TestBrowserSignInThroughTokenServer(t *testing.T) {
	b := newBrowser(t)
	site := startTokenServerSite(t)

	alice := newPage(t, b, "alice")
	// Chromium logs the token endpoint's 401 before the sign-in, the
	// form's 401 after a wrong password, and the 404 of the form's
	// /favicon.ico (the form names no icon; the instance has none).
	alice.allow(`status of 40[14]`)
	openSignedOut(t, alice, site)
	submitSignIn(alice, tsAlice.user, tsAlice.password)
	alice.waitThroughNavigation(signedInAs(tsAlice), "alice signed in")
	if got := eval[string](alice, `document.getElementById('me-sub').textContent`); got != "You · alice" {
		t.Errorf("alice: me-sub: got %q, want %q", got, "You · alice")
	}
	if eval[bool](alice, `!document.getElementById('welcome').hidden`) {
		t.Error("alice: the name form shows in jwt mode")
	}
	if c := eval[string](alice, `document.cookie`); c != "" {
		t.Errorf("alice: the page can read cookies %q; the session cookie must be HttpOnly and on /auth/ only", c)
	}

	bob := newPage(t, b, "bob")
	bob.allow(`status of 40[14]`)
	openSignedOut(t, bob, site)
	submitSignIn(bob, tsBob.user, "not "+tsBob.password)
	bob.waitThroughNavigation(onSignInForm(true), "the form's wrong-password error")
	if got := eval[string](bob, `document.getElementById('user').value`); got != tsBob.user {
		t.Errorf("bob: the form after a wrong password: user %q, want %q", got, tsBob.user)
	}
	if got := eval[string](bob, `document.getElementById('password').value`); got != "" {
		t.Errorf("bob: the form after a wrong password keeps the password %q", got)
	}
	bob.screenshot("tokenserver-wrong-password")
	submitSignIn(bob, tsBob.user, tsBob.password)
	bob.waitThroughNavigation(signedInAs(tsBob), "bob signed in")
	if got := eval[string](bob, `document.getElementById('me-sub').textContent`); got != "You · bob" {
		t.Errorf("bob: me-sub: got %q, want %q", got, "You · bob")
	}

	// Both are in the lobby, the page's first room.
	for _, p := range []*chatPage{alice, bob} {
		p.waitJS(`document.querySelector('#room-list [data-room="lobby"][aria-current]')`, "the lobby open")
	}
	alice.send("hello bob, signed in through the token server")
	bob.waitMessage("alice", "hello bob, signed in through the token server")
	alice.waitMessage("alice", "hello bob, signed in through the token server")
	bob.send("hello alice")
	alice.waitMessage("bob", "hello alice")
	bob.waitMessage("bob", "hello alice")
	if !eval[bool](bob, messagesJS("bob", "hello alice")+`[0].classList.contains('own')`) {
		t.Error("bob: his message is not marked as his own")
	}
	if eval[bool](bob, messagesJS("alice", "hello bob, signed in through the token server")+`[0].classList.contains('own')`) {
		t.Error("bob: alice's message is marked as his own")
	}
	alice.screenshot("tokenserver-signed-in")
}
