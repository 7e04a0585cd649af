package web_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/web"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write docs/screenshot.png from TestBrowser/screenshots")

const (
	// wait bounds every expected change on a page, a socket or a server.
	wait = 10 * time.Second
	// reconnectWait bounds a page's reconnect after a restart: the backoff
	// of the page (1 s doubling, full jitter) plus the restart itself.
	reconnectWait = 20 * time.Second
	// chromiumPath is where Debian's chromium package puts the browser.
	chromiumPath = "/usr/bin/chromium"
	// screenshotDir (git-ignored) receives every test's screenshots.
	screenshotDir = "../artifacts/screenshots"
	// docsScreenshot is the README's picture of a chat in progress.
	docsScreenshot = "../docs/screenshot.png"

	// blockedWord is refused by the moderator of every test instance.
	blockedWord   = "spam"
	blockedReason = "no spam here"
)

// requireTool returns the path of a program the test needs. A missing one
// skips the test, or fails it when the CI environment variable is set.
func requireTool(t *testing.T, name, file string) string {
	t.Helper()
	path, err := exec.LookPath(file)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required when CI is set: %v", name, err)
	}
	t.Skipf("%s not found, skipping: %v", name, err)
	return ""
}

// ---- server instances ----
//
// The declarations from here to pagesOn are the one seam between these
// tests and the message store; startInstances is the helper the tests call.
// Every instance of a test uses the Redis backend of that test's private
// redis-server, so instances share messages, history and presence, and
// history survives an instance's restart.

// sharedStore reports whether the instances of one test share their message
// store, so that messages and history cross instances and survive a restart.
const sharedStore = true

// redisByTest holds the private Redis of each running test.
var redisByTest sync.Map // test name → *testredis.Server

// instanceConfig is the configuration of every test instance: a Redis
// backend shared by the test's instances and a moderator that refuses
// blockedWord.
func instanceConfig(t *testing.T) server.Config {
	t.Helper()
	noSpam := pipeline.Moderator{Name: "no-spam", Middleware: func(next message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if strings.Contains(strings.ToLower(string(msg.Payload)), blockedWord) {
				return nil, pipeline.Errorf(pipeline.CodeRejected, blockedReason)
			}
			return next(msg)
		}
	}}
	rs, ok := redisByTest.Load(t.Name())
	if !ok {
		srv := testredis.Start(t)
		rs, _ = redisByTest.LoadOrStore(t.Name(), srv)
		t.Cleanup(func() { redisByTest.Delete(t.Name()) })
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rsrv := rs.(*testredis.Server)
	rb, err := redisstore.New(redisstore.Config{URL: rsrv.URL, Prefix: rsrv.Prefix, Partitions: 4, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return server.Config{
		Backend:         backend.Redis(rb, log),
		Moderators:      []pipeline.Moderator{noSpam},
		ShutdownTimeout: 5 * time.Second,
		PresenceEvery:   200 * time.Millisecond,
		Logger:          log,
	}
}

// instance is one running chatstream server.
type instance struct {
	url  string // base URL, http://127.0.0.1:port
	addr string // listen address, for a restart on the same one
	stop func() // stops the server and waits for it; safe to call twice
}

// startInstance starts a server on addr ("127.0.0.1:0" for any port) and
// stops it in t.Cleanup.
func startInstance(t *testing.T, addr string) *instance {
	t.Helper()
	cfg := instanceConfig(t)
	cfg.Addr = addr
	return startInstanceWith(t, cfg)
}

// startInstanceWith starts a server with cfg (instanceConfig's, changed)
// and stops it in t.Cleanup.
func startInstanceWith(t *testing.T, cfg server.Config) *instance {
	t.Helper()
	addr := cfg.Addr
	s, err := server.New(cfg)
	if err != nil {
		t.Fatalf("start instance on %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Pipeline().Running():
	case err := <-done:
		cancel()
		t.Fatalf("instance on %s stopped while starting: %v", addr, err)
	case <-time.After(wait):
		cancel()
		t.Fatalf("instance on %s did not start within %s", addr, wait)
	}
	in := &instance{url: s.URL(), addr: s.Addr().String()}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("instance on %s: %v", in.addr, err)
			}
		})
	}
	t.Cleanup(in.stop)
	return in
}

// startInstances starts n instances and returns their base URLs.
func startInstances(t *testing.T, n int) []string {
	t.Helper()
	urls := make([]string, n)
	for i := range urls {
		urls[i] = startInstance(t, "127.0.0.1:0").url
	}
	return urls
}

// pagesOn returns a base URL for each of n pages that must see each other's
// messages: n instances when they share a store, else one.
func pagesOn(t *testing.T, n int) []string {
	t.Helper()
	k := 1
	if sharedStore {
		k = n
	}
	urls := startInstances(t, k)
	out := make([]string, n)
	for i := range out {
		out[i] = urls[i%len(urls)]
	}
	return out
}

// ---- browser ----

// newBrowser starts headless Chromium with a fresh profile and closes it in
// t.Cleanup.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := requireTool(t, "chromium", chromiumPath)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Pages in background tabs must keep their timers and sockets.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first Do starts the browser and binds it to bctx, which has no
	// deadline; every later action gets its own.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// chatPage is one tab in its own browser context (its own localStorage),
// watched for JavaScript dialogs and console errors.
type chatPage struct {
	t    *testing.T
	ctx  context.Context
	name string

	// mu guards the fields below, written by the watcher goroutines.
	mu       sync.Mutex
	dialogs  []string
	problems []string
	allowed  []*regexp.Regexp
}

// newPage opens a tab, runs setup (such as viewport emulation) and starts
// watching it. At cleanup the test fails if a dialog opened or the console
// showed an error that allow did not permit.
func newPage(t *testing.T, browser context.Context, name string, setup ...chromedp.Action[chromedp.Void]) *chatPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &chatPage{t: t, ctx: ctx, name: name}
	// The first Do opens the tab and binds it to ctx, which has no deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	p.do(setup...)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	console := chromedp.Console(ctx)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.dialogs = append(p.dialogs, fmt.Sprintf("%s %q", ev.Type, ev.Message))
			p.mu.Unlock()
			// Dismiss it, or the page stays blocked; the test fails anyway.
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				p.mu.Lock()
				p.problems = append(p.problems, m.String())
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(p.checkClean)
	return p
}

// allow permits console errors matching pattern.
func (p *chatPage) allow(pattern string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.allowed = append(p.allowed, regexp.MustCompile(pattern))
}

func (p *chatPage) checkClean() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.dialogs {
		p.t.Errorf("%s: a JavaScript dialog opened: %s", p.name, d)
	}
next:
	for _, msg := range p.problems {
		for _, re := range p.allowed {
			if re.MatchString(msg) {
				continue next
			}
		}
		p.t.Errorf("%s: console error: %s", p.name, msg)
	}
}

// openChat opens url in a new page and signs in as name.
func openChat(t *testing.T, browser context.Context, url, name string, setup ...chromedp.Action[chromedp.Void]) *chatPage {
	t.Helper()
	p := newPage(t, browser, name, setup...)
	p.do(chromedp.Navigate(url))
	p.signIn()
	return p
}

// signIn submits the name form and waits for the connection.
func (p *chatPage) signIn() {
	p.t.Helper()
	p.waitJS(`!document.getElementById('welcome').hidden`, "the name form")
	p.do(chromedp.SendKeys(chromedp.ID("name-input"), p.name+"\r"))
	p.waitState("connected", wait)
}

func (p *chatPage) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression in p and decodes its value.
func eval[T any](p *chatPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluating %s: %v", p.name, expr, err)
	}
	return v
}

// waitJS waits until expr is truthy in p.
func (p *chatPage) waitJS(expr, what string) {
	p.t.Helper()
	p.waitJSFor(expr, what, wait)
}

func (p *chatPage) waitJSFor(expr, what string, d time.Duration) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, d+time.Second)
	defer cancel()
	// Interval polling: animation frames do not run in background tabs.
	poll := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(25*time.Millisecond))
	if _, err := chromedp.Run(ctx, poll); err != nil {
		p.t.Fatalf("%s: waiting for %s: %v", p.name, what, err)
	}
}

// js returns s as a JavaScript string literal.
func js(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // strings always marshal
	}
	return string(b)
}

func (p *chatPage) waitState(state string, d time.Duration) {
	p.t.Helper()
	p.waitJSFor(fmt.Sprintf(`document.getElementById('status').dataset.state === %s`, js(state)), "status "+state, d)
}

// pressEnter presses Enter in the focused element as a keyboard does: a
// keydown the page can cancel, with no separate char event (which CDP would
// insert even after the page cancelled the keydown).
var pressEnter = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
			Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		})
		if err != nil {
			return err
		}
	}
	return nil
})

// send types text into the composer and presses Enter.
func (p *chatPage) send(text string) {
	p.t.Helper()
	p.do(
		chromedp.SetValue(chromedp.ID("composer-input"), text),
		chromedp.Focus(chromedp.ID("composer-input")),
		pressEnter,
	)
}

// messagesJS is an expression for the delivered messages with this user
// and text.
func messagesJS(user, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages li.msg')].filter((li) => li.dataset.user === %s && li.querySelector('.msg-text').textContent === %s)`, js(user), js(text))
}

// waitMessage waits until a delivered message from user with text shows.
func (p *chatPage) waitMessage(user, text string) {
	p.t.Helper()
	p.waitJS(messagesJS(user, text)+`.length > 0`, fmt.Sprintf("message %q from %s", text, user))
}

// countMessages returns how many times a message from user with text shows.
func (p *chatPage) countMessages(user, text string) int {
	p.t.Helper()
	return eval[int](p, messagesJS(user, text)+`.length`)
}

// joinRoom joins (or creates) a room with the sidebar form.
func (p *chatPage) joinRoom(room string) {
	p.t.Helper()
	p.do(
		chromedp.SetValue(chromedp.ID("join-input"), room),
		chromedp.SendKeys(chromedp.ID("join-input"), "\r"),
	)
	p.waitJS(fmt.Sprintf(`document.querySelector('#room-list [data-room=%s][aria-current]')`, js(room)), "room "+room+" open")
}

// openRoom clicks a room in the sidebar.
func (p *chatPage) openRoom(room string) {
	p.t.Helper()
	p.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`#room-list [data-room=%s]`, js(room)))))
	p.waitJS(fmt.Sprintf(`document.querySelector('#room-list [data-room=%s][aria-current]')`, js(room)), "room "+room+" open")
}

// noHorizontalScroll fails the test if the page is wider than its viewport.
func (p *chatPage) noHorizontalScroll(when string) {
	p.t.Helper()
	type widths struct{ Scroll, Client, Scroller, ScrollerClient int }
	w := eval[widths](p, `(() => { const d = document.documentElement, s = document.getElementById('scroller');
		return {Scroll: d.scrollWidth, Client: d.clientWidth, Scroller: s.scrollWidth, ScrollerClient: s.clientWidth}; })()`)
	if w.Scroll > w.Client {
		p.t.Errorf("%s: %s: page scrolls sideways: scrollWidth %d > clientWidth %d", p.name, when, w.Scroll, w.Client)
	}
	if w.Scroller > w.ScrollerClient {
		p.t.Errorf("%s: %s: message list scrolls sideways: scrollWidth %d > clientWidth %d", p.name, when, w.Scroller, w.ScrollerClient)
	}
}

// screenshot saves the viewport as artifacts/screenshots/<name>.png.
func (p *chatPage) screenshot(name string) []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	return buf
}

// emulateDark makes prefers-color-scheme dark.
var emulateDark = chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	})
	return err
})

// ---- socket clients that play other users ----

// dialUser connects a protocol client as user, joins rooms and closes it in
// t.Cleanup.
func dialUser(t *testing.T, base, user string, rooms ...string) *wstest.Client {
	t.Helper()
	c, err := wstest.Dial(base, user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, r := range rooms {
		if err := c.Join(r, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" && f.Room == r }, wait); err != nil {
			t.Fatalf("%s joining %s: %v", user, r, err)
		}
	}
	return c
}

// say sends text as c and waits for the ack.
func say(t *testing.T, c *wstest.Client, room, text string) {
	t.Helper()
	ref := fmt.Sprintf("t-%d", time.Now().UnixNano())
	if err := c.Say(room, text, ref); err != nil {
		t.Fatal(err)
	}
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != "ack" {
		t.Fatalf("say %q: got %s", text, f.Raw)
	}
}

// ---- tests ----

// TestPageSecurityHeaders: the page is served with a CSP that allows no
// inline code, nosniff and a referrer policy, and holds no inline script,
// style or event handler that such a CSP would block.
func TestPageSecurityHeaders(t *testing.T) {
	base := startInstances(t, 1)[0]
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read fully
	if err != nil {
		t.Fatal(err)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval"} {
		if strings.Contains(csp, bad) {
			t.Errorf("Content-Security-Policy %q allows %s", csp, bad)
		}
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
	if got := resp.Header.Get("Referrer-Policy"); got == "" {
		t.Error("Referrer-Policy is missing")
	}

	html := string(body)
	inline := []struct{ name, pattern string }{
		{"inline script", `<script(\s[^>]*)?>\s*[^<\s]`},
		{"style element", `<style[\s>]`},
		{"style attribute", `\sstyle\s*=`},
		{"event handler attribute", `\son[a-z]+\s*=`},
		{"javascript: URL", `(?i)javascript:`},
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(tag, " src=") {
			t.Errorf("index.html has a script without src: %s", tag)
		}
	}
	for _, c := range inline {
		if loc := regexp.MustCompile(c.pattern).FindStringIndex(html); loc != nil {
			t.Errorf("index.html has a %s: %q", c.name, html[loc[0]:min(len(html), loc[1]+40)])
		}
	}

	types := map[string]string{
		"/app.js": "text/javascript", "/chatstream-client.js": "text/javascript", "/dom.js": "text/javascript",
		"/style.css": "text/css", "/icon.svg": "image/svg+xml",
	}
	for path, want := range types {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the headers matter
		if got := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(got, want) {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, got, want)
		}
	}
}

// TestScriptsAvoidHTMLSinks: the page's scripts never turn strings into
// markup or code, so message text can only ever be text.
func TestScriptsAvoidHTMLSinks(t *testing.T) {
	sinks := []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "javascript:"}
	scripts, err := fs.Glob(web.FS(), "*.js")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts in web.FS(): %v", err)
	}
	for _, name := range scripts {
		src, err := fs.ReadFile(web.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, sink := range sinks {
			if strings.Contains(string(src), sink) {
				t.Errorf("%s uses %s", name, sink)
			}
		}
	}
}

// TestBrowser runs the end-to-end scenarios in one headless Chromium, in
// parallel; every page has its own browser context (its own storage), and
// every scenario its own server instances.
func TestBrowser(t *testing.T) {
	b := newBrowser(t)
	scenarios := []struct {
		name string
		run  func(*testing.T, context.Context)
	}{
		{"two pages", twoPages},
		{"rejected message", rejectedMessage},
		{"server restart", serverRestart},
		{"narrow screen", narrowScreen},
		{"history and scrolling", historyAndScrolling},
		{"history larger than a page", historyLargerThanPage},
		{"screenshots", chatScreenshots},
		{"retry keeps the ref", retryKeepsRef},
		{"malformed room in the URL", malformedHash},
		{"name in another Unicode form", nfkcName},
		{"a room keeps a bounded timeline", boundedTimeline},
		{"a room not open keeps a bounded timeline", boundedBackground},
		{"a room left scrolled up keeps the reader's place", leftScrolledUp},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, b)
		})
	}
}

// twoPages: two people in separate browser contexts chat; own
// messages are marked; links are safe; markup shows as text and runs
// nothing; other rooms count unread messages; a reload shows the history,
// each message once.
func twoPages(t *testing.T, b context.Context) {
	urls := pagesOn(t, 2)
	alice := openChat(t, b, urls[0]+"/#/lobby", "alice")
	bob := openChat(t, b, urls[1]+"/#/lobby", "bob")

	alice.send("hello bob")
	bob.waitMessage("alice", "hello bob")
	alice.waitMessage("alice", "hello bob")
	if !eval[bool](alice, messagesJS("alice", "hello bob")+`[0].classList.contains('own')`) {
		t.Error("alice's own message is not marked as hers")
	}
	if eval[bool](bob, messagesJS("alice", "hello bob")+`[0].classList.contains('own')`) {
		t.Error("alice's message is marked as bob's own")
	}
	if n := eval[int](alice, `document.querySelectorAll('#pending li').length`); n != 0 {
		t.Errorf("alice still has %d pending messages after the ack", n)
	}

	const link = "https://example.com/docs?page=1"
	linkText := "hi alice, the docs are at " + link + "."
	bob.send(linkText)
	alice.waitMessage("bob", linkText)
	type anchor struct{ Href, Rel, Target, Text string }
	a := eval[anchor](alice, messagesJS("bob", linkText)+`.map((li) => { const a = li.querySelector('a'); return {Href: a.href, Rel: a.rel, Target: a.target, Text: a.textContent}; })[0]`)
	if a.Href != link || a.Text != link || a.Target != "_blank" {
		t.Errorf("link = %+v, want href and text %q in a new tab", a, link)
	}
	for _, r := range []string{"noopener", "noreferrer", "nofollow"} {
		if !strings.Contains(a.Rel, r) {
			t.Errorf("link rel = %q, want %s", a.Rel, r)
		}
	}

	const markup = `<img src=x onerror=alert(1)>`
	bob.send(markup)
	alice.waitMessage("bob", markup)
	bob.waitMessage("bob", markup)
	const notJS = `javascript:alert(2) and ftp://example.com stay text`
	bob.send(notJS)
	for _, p := range []*chatPage{alice, bob} {
		p.waitMessage("bob", notJS)
		if n := eval[int](p, `document.querySelectorAll('#messages img, #pending img, #messages script').length`); n != 0 {
			p.t.Errorf("%s: the message list holds %d img or script elements", p.name, n)
		}
		if n := eval[int](p, messagesJS("bob", notJS)+`[0].querySelectorAll('a').length`); n != 0 {
			p.t.Errorf("%s: a javascript: or ftp: URL became a link", p.name)
		}
	}

	// A room in the background counts what arrives there.
	alice.joinRoom("design")
	alice.openRoom("lobby")
	bob.joinRoom("design")
	bob.send("design review at 3?")
	bob.send("bring the mockups")
	alice.waitJS(`document.querySelector('#room-list [data-room="design"] .badge')?.textContent === '2'`, "2 unread in design")
	alice.screenshot("two-pages-alice")
	bob.screenshot("two-pages-bob")
	alice.openRoom("design")
	alice.waitMessage("bob", "bring the mockups")
	if eval[bool](alice, `!!document.querySelector('#room-list [data-room="design"] .badge')`) {
		t.Error("the unread badge stays after opening the room")
	}

	// A reload remembers the name and rooms and shows each message once.
	bob.do(chromedp.Reload())
	bob.waitState("connected", wait)
	bob.openRoom("lobby")
	bob.waitMessage("alice", "hello bob")
	for _, m := range []struct{ user, text string }{{"alice", "hello bob"}, {"bob", linkText}, {"bob", markup}} {
		if n := bob.countMessages(m.user, m.text); n != 1 {
			t.Errorf("after reload %q shows %d times, want once", m.text, n)
		}
	}
	bob.screenshot("two-pages-bob-reloaded")
}

// rejectedMessage: a message the moderator refuses stays on the
// page marked as not sent, with the server's reason, and can be discarded;
// the keyboard alone reaches the composer and sends.
func rejectedMessage(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	p := openChat(t, b, base+"/#/lobby", "mallory")

	// Keyboard: the skip link is the first stop and leads to the composer;
	// Shift+Enter adds a line and Enter sends.
	// After a reload (the name is remembered) nothing has focus yet.
	p.do(chromedp.Reload())
	p.waitState("connected", wait)
	p.do(chromedp.KeyEvent(kb.Tab))
	if got := eval[string](p, `document.activeElement.className`); got != "skip-link" {
		t.Errorf("first Tab focuses %q, want the skip link", got)
	}
	p.do(pressEnter)
	p.waitJS(`document.activeElement.id === 'composer-input'`, "the composer focused by the skip link")
	p.do(chromedp.KeyEvent("first line"), chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierShift)),
		chromedp.KeyEvent("second line"))
	if got := eval[string](p, `document.getElementById('composer-input').value`); got != "first line\nsecond line" {
		t.Errorf("composer holds %q after Shift+Enter, want two lines", got)
	}
	p.do(pressEnter)
	p.waitMessage("mallory", "first line\nsecond line")
	if got := eval[string](p, `document.getElementById('composer-input').value`); got != "" {
		t.Errorf("composer holds %q after Enter sent the message", got)
	}

	p.send("buy cheap spam today")
	p.waitJS(`document.querySelector('#pending li.failed .msg-error-text')`, "the rejected message marked as failed")
	reason := eval[string](p, `document.querySelector('#pending li.failed .msg-error-text').textContent`)
	if !strings.Contains(reason, blockedReason) || !strings.Contains(reason, "moderation") {
		t.Errorf("failed message reason = %q, want the moderator's reason %q", reason, blockedReason)
	}
	if got := eval[string](p, `document.querySelector('#pending li.failed .msg-text').textContent`); got != "buy cheap spam today" {
		t.Errorf("failed message text = %q", got)
	}
	p.send("sorry, just saying hi")
	p.waitMessage("mallory", "sorry, just saying hi")
	if n := p.countMessages("mallory", "buy cheap spam today"); n != 0 {
		t.Errorf("the rejected message was delivered %d times", n)
	}
	p.screenshot("rejected")
	p.do(chromedp.Click(chromedp.CSS(`#pending li.failed [data-action="discard"]`)))
	p.waitJS(`!document.querySelector('#pending li')`, "the failed message discarded")
}

// serverRestart: alice and bob are on two instances sharing Redis. When
// alice's instance goes away her page says it is reconnecting; bob keeps
// chatting on his; when alice's instance is back on the same address her page
// reconnects by itself and shows what was sent meanwhile exactly once.
func serverRestart(t *testing.T, b context.Context) {
	in := startInstance(t, "127.0.0.1:0")
	other := startInstance(t, "127.0.0.1:0")
	alice := openChat(t, b, in.url+"/#/lobby", "alice")
	bob := openChat(t, b, other.url+"/#/lobby", "bob")
	alice.allow(`WebSocket connection to .* failed`)
	alice.send("before the restart")
	bob.waitMessage("alice", "before the restart")

	in.stop()
	alice.waitState("reconnecting", wait)
	alice.waitJS(`document.getElementById('status-text').textContent.startsWith('Reconnecting')`, "the reconnecting status")
	alice.screenshot("restart-reconnecting")
	bob.send("sent meanwhile")
	bob.waitMessage("bob", "sent meanwhile")

	startInstance(t, in.addr)
	alice.waitState("connected", reconnectWait)
	alice.waitJS(`document.getElementById('status-text').textContent === 'Connected'`, "the connected status")
	alice.waitMessage("bob", "sent meanwhile")
	if n := alice.countMessages("bob", "sent meanwhile"); n != 1 {
		t.Errorf("alice: %q shows %d times after the reconnect, want once", "sent meanwhile", n)
	}
	alice.send("after the restart")
	bob.waitMessage("alice", "after the restart")
	bob.send("welcome back")
	alice.waitMessage("bob", "welcome back")
	bob.waitMessage("bob", "welcome back")
	alice.waitMessage("alice", "after the restart")
	for _, p := range []*chatPage{alice, bob} {
		for _, m := range []struct{ user, text string }{{"alice", "before the restart"}, {"alice", "after the restart"}, {"bob", "welcome back"}} {
			if n := p.countMessages(m.user, m.text); n != 1 {
				t.Errorf("%s: %q shows %d times, want once", p.name, m.text, n)
			}
		}
	}
	alice.screenshot("restart-reconnected")

	if sharedStore {
		// The history outlives the instance: a fresh page loads it.
		bob.do(chromedp.Reload())
		bob.waitState("connected", wait)
		bob.waitMessage("alice", "before the restart")
		if n := bob.countMessages("alice", "before the restart"); n != 1 {
			t.Errorf("after the restart and a reload %q shows %d times, want once", "before the restart", n)
		}
	}
}

// historyAndScrolling: a join shows the newest page of history; scrolling
// to the top loads the older messages without moving what the reader sees;
// a message that arrives while the reader is up in the history shows a
// "new messages" pill instead of scrolling, and the pill goes to the bottom.
func historyAndScrolling(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	// Three senders stay within the server's per-connection burst.
	names := []string{"carol", "dave", "erin"}
	var senders []*wstest.Client
	for _, n := range names {
		senders = append(senders, dialUser(t, base, n, "lobby"))
	}
	const total = 80
	for i := 1; i <= total; i++ {
		say(t, senders[i%len(senders)], "lobby", fmt.Sprintf("message %02d", i))
	}
	p := openChat(t, b, base+"/#/lobby", "reader", chromedp.EmulateViewport(1024, 700))
	p.waitMessage(names[total%len(names)], fmt.Sprintf("message %02d", total))
	if n := eval[int](p, `document.querySelectorAll('#messages li.msg').length`); n != 50 {
		t.Errorf("the join shows %d messages, want the newest 50", n)
	}
	if !eval[bool](p, `!document.getElementById('load-older').hidden`) {
		t.Error("no way to load earlier messages after a full page of history")
	}
	if !eval[bool](p, `(() => { const s = document.getElementById('scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 2; })()`) {
		t.Error("the join does not show the newest message at the bottom")
	}

	// Scroll to the top: the older 30 load above, and the message that was
	// at the top stays where it was.
	const anchor = `[...document.querySelectorAll('#messages li.msg')].find((li) => li.querySelector('.msg-text').textContent === 'message 31')`
	p.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('scroller').scrollTop = 0`))
	before := eval[float64](p, anchor+`.getBoundingClientRect().top`)
	p.waitJS(`document.querySelectorAll('#messages li.msg').length === 80`, "the older messages")
	p.waitJS(`document.getElementById('history-status').textContent === 'This is the beginning of #lobby.'`, "the start of the room")
	after := eval[float64](p, anchor+`.getBoundingClientRect().top`)
	if d := after - before; d > 2 || d < -2 {
		t.Errorf("loading older messages moved the reader's place by %.0f px", d)
	}
	p.screenshot("history-top")

	// A new message while reading shows the pill and does not scroll.
	top := eval[float64](p, `document.getElementById('scroller').scrollTop`)
	say(t, senders[0], "lobby", "news while you read")
	p.waitJS(`!document.getElementById('new-pill').hidden`, "the new messages pill")
	if got := eval[float64](p, `document.getElementById('scroller').scrollTop`); got != top {
		t.Errorf("a new message scrolled the list from %.0f to %.0f while the reader was up", top, got)
	}
	if got := eval[string](p, `document.getElementById('new-pill').textContent`); !strings.Contains(got, "1 new message") {
		t.Errorf("pill says %q", got)
	}
	p.screenshot("history-new-pill")
	p.do(chromedp.Click(chromedp.ID("new-pill")))
	p.waitJS(`document.getElementById('new-pill').hidden && (() => { const s = document.getElementById('scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 2; })()`, "the bottom after the pill")
}

// historyLargerThanPage: a room whose newest 50 messages do not fit the
// server's page budget (each text is 4,000 quotes, 8 KB once escaped): the
// join shows the newest messages that fit and offers the older ones, which
// load as the reader scrolls up until the start of the room, each once.
func historyLargerThanPage(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	// Three senders stay within the server's per-connection burst.
	names := []string{"carol", "dave", "erin"}
	var senders []*wstest.Client
	for _, n := range names {
		senders = append(senders, dialUser(t, base, n, "lobby"))
	}
	const total = 45
	text := func(i int) string { return fmt.Sprintf("big %02d %s", i, strings.Repeat(`"`, 4000)) }
	for i := 1; i <= total; i++ {
		say(t, senders[i%len(names)], "lobby", text(i))
	}
	p := openChat(t, b, base+"/#/lobby", "reader", chromedp.EmulateViewport(1024, 700))
	p.waitMessage(names[total%len(names)], text(total))
	if n := eval[int](p, `document.querySelectorAll('#messages li.msg').length`); n == 0 || n >= total {
		t.Errorf("the join shows %d messages, want the newest that fit one page, fewer than %d", n, total)
	}
	if !eval[bool](p, `!document.getElementById('load-older').hidden`) {
		t.Error("no way to load the messages that did not fit the join's page")
	}
	// Each scroll to the top loads one more page.
	p.waitJSFor(`(document.getElementById('scroller').scrollTop = 0, document.querySelectorAll('#messages li.msg').length === `+fmt.Sprint(total)+`)`,
		"every older message", 2*wait)
	p.waitJS(`document.getElementById('history-status').textContent === 'This is the beginning of #lobby.'`, "the start of the room")
	for _, i := range []int{1, total / 2, total} {
		if n := p.countMessages(names[i%len(names)], text(i)); n != 1 {
			t.Errorf("message %d shows %d times, want once", i, n)
		}
	}
	order := eval[[]string](p, `[...document.querySelectorAll('#messages li.msg .msg-text')].map((e) => e.textContent.slice(0, 6))`)
	for i, got := range order {
		if want := fmt.Sprintf("big %02d", i+1); got != want {
			t.Fatalf("message %d of the timeline is %q, want %q", i, got, want)
		}
	}
}

// narrowScreen: at 375 px wide nothing scrolls sideways, long
// words and links wrap, and the room list is a drawer that opens and closes.
func narrowScreen(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	carol := dialUser(t, base, "carol", "lobby")
	say(t, carol, "lobby", "Has anyone tried the new build on a phone?")
	say(t, carol, "lobby", "https://example.com/a/really/long/path/that/goes/on/and/on/without/any/break/at/all?with=query&and=more&parameters=too")

	p := newPage(t, b, "sam", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile, chromedp.EmulateTouch))
	p.do(chromedp.Navigate(base + "/#/lobby"))
	p.waitJS(`!document.getElementById('welcome').hidden`, "the name form")
	p.screenshot("narrow-welcome")
	p.noHorizontalScroll("welcome")
	p.signIn()
	p.waitMessage("carol", "Has anyone tried the new build on a phone?")
	p.send("Yes! " + strings.Repeat("superlongwordwithoutspaces", 12))
	p.send("Looks good at 375 px. Room list is in the menu.")
	p.waitMessage("sam", "Looks good at 375 px. Room list is in the menu.")
	say(t, carol, "lobby", "Great, thanks!")
	p.waitMessage("carol", "Great, thanks!")
	p.noHorizontalScroll("chat")
	p.screenshot("narrow-chat")

	if eval[string](p, `getComputedStyle(document.getElementById('sidebar')).visibility`) != "hidden" {
		t.Error("the room list is open on a narrow screen before the menu is used")
	}
	p.do(chromedp.Click(chromedp.ID("menu-button")))
	p.waitJS(`document.body.classList.contains('drawer-open') && document.getElementById('sidebar').getBoundingClientRect().left >= 0`, "the room list drawer open")
	if got := eval[string](p, `document.getElementById('menu-button').getAttribute('aria-expanded')`); got != "true" {
		t.Errorf("menu button aria-expanded = %q while the drawer is open", got)
	}
	p.noHorizontalScroll("drawer open")
	p.screenshot("narrow-rooms")
	p.do(chromedp.KeyEvent(kb.Escape))
	p.waitJS(`!document.body.classList.contains('drawer-open') && getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'`, "the drawer closed")
	p.waitJS(`document.activeElement.id === 'menu-button'`, "focus back on the menu button")
	p.noHorizontalScroll("drawer closed")
}

// chatScreenshots makes the pictures of a chat in progress, in light
// and dark and on a phone; with -update-screenshot it also writes
// docs/screenshot.png.
func chatScreenshots(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	carol := dialUser(t, base, "Carol", "lobby", "design", "random")
	dave := dialUser(t, base, "Dave", "lobby", "design")
	say(t, carol, "lobby", "Morning all! Did yesterday's deploy go out?")
	say(t, dave, "lobby", "Yes, shipped at 18:40. Dashboards look calm so far.")
	say(t, dave, "lobby", "Release notes are up: https://example.com/releases/2.4")

	desktop := chromedp.EmulateViewport(1280, 860)
	alice := openChat(t, b, base+"/#/lobby", "Alice", desktop)
	alice.waitMessage("Dave", "Release notes are up: https://example.com/releases/2.4")
	alice.joinRoom("design")
	alice.joinRoom("random")
	alice.openRoom("lobby")
	alice.send("Nice work! The reconnect fix is already paying off.")
	alice.waitMessage("Alice", "Nice work! The reconnect fix is already paying off.")
	say(t, carol, "lobby", "Agreed. p99 latency on the EU gateways dropped by a third.")
	say(t, carol, "lobby", "Lunch at 12:30 to celebrate?")
	alice.send("Count me in!")
	alice.waitMessage("Alice", "Count me in!")
	say(t, dave, "lobby", "Same here. I'll book a table.")
	say(t, dave, "design", "New mockups for the room list are in Figma.")
	say(t, carol, "design", "Love the unread badges.")
	say(t, carol, "design", "Can we try a softer purple?")
	say(t, carol, "random", "Who left the espresso machine on?")
	alice.waitMessage("Dave", "Same here. I'll book a table.")
	erin := dialUser(t, base, "Erin", "lobby")
	if eval[bool](alice, `!document.getElementById('members-button').hidden`) {
		alice.waitJS(`[...document.querySelectorAll('#messages .notice')].some((n) => n.textContent.startsWith('Erin joined'))`, "Erin's join notice")
	}
	say(t, erin, "lobby", "Hi everyone! First day on the team today.")
	alice.waitMessage("Erin", "Hi everyone! First day on the team today.")
	alice.waitJS(`document.querySelector('#room-list [data-room="design"] .badge')?.textContent === '3' && document.querySelector('#room-list [data-room="random"] .badge')?.textContent === '1'`, "unread badges")
	// A reply being typed.
	alice.do(chromedp.SetValue(chromedp.ID("composer-input"), "Welcome, Erin! Join us for lunch"), chromedp.Focus(chromedp.ID("composer-input")))
	light := alice.screenshot("chat-light")
	if *updateScreenshot {
		if err := os.WriteFile(docsScreenshot, light, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	alice.do(emulateDark)
	alice.screenshot("chat-dark")
	alice.noHorizontalScroll("desktop")
	// The people list, when the server reports presence.
	if eval[bool](alice, `!document.getElementById('members-button').hidden`) {
		alice.do(chromedp.Click(chromedp.ID("members-button")))
		alice.waitJS(`!document.getElementById('members').hidden`, "the people list")
		alice.screenshot("chat-members-dark")
		alice.do(chromedp.KeyEvent(kb.Escape))
		alice.waitJS(`document.getElementById('members').hidden && document.activeElement.id === 'members-button'`, "the people list closed")
	}

	phone := openChat(t, b, base+"/#/lobby", "Alice", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile, chromedp.EmulateTouch))
	phone.waitMessage("Dave", "Same here. I'll book a table.")
	phone.noHorizontalScroll("phone")
	phone.screenshot("chat-phone-light")
	phone.do(emulateDark)
	phone.screenshot("chat-phone-dark")
}

// addScript runs src in the page before its own scripts, on every load.
func addScript(src string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: src})
		return err
	})
}

// loseAckJS wraps the page's WebSocket: the first send of the text in
// window.loseAck is stored by the server, but the page never hears so: its
// ack comes as an "unavailable" error and its own message is lost, as when
// a connection fails after the server stored the message.
const loseAckJS = `(() => {
  const Native = window.WebSocket;
  const lost = new Map();
  window.loseAck = '';
  window.WebSocket = class extends Native {
    send(data) {
      const f = JSON.parse(data);
      if (f.type === 'send' && window.loseAck && f.text === window.loseAck) {
        window.loseAck = '';
        lost.set(f.ref, { ack: true, message: true });
      }
      super.send(data);
    }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        const lines = String(ev.data).split('\n').flatMap((line) => {
          let f;
          try { f = JSON.parse(line); } catch { return [line]; }
          const l = f && lost.get(f.ref);
          if (l && f.type === 'ack' && l.ack) {
            l.ack = false;
            return [JSON.stringify({ type: 'error', code: 'unavailable', message: 'the store did not answer', ref: f.ref, room: f.room })];
          }
          if (l && f.type === 'message' && l.message) {
            l.message = false;
            return [];
          }
          return [line];
        });
        if (lines.length) fn.call(this, new MessageEvent('message', { data: lines.join('\n') }));
      });
    }
  };
})();`

// storedTexts returns the texts of the newest messages of room.
func storedTexts(t *testing.T, base, room string) []string {
	t.Helper()
	c, err := wstest.Dial(base, "auditor")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Join(room, 50); err != nil {
		t.Fatal(err)
	}
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" && f.Room == room }, wait)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range f.History {
		texts = append(texts, m.Text)
	}
	return texts
}

// retryKeepsRef: a message stored by the server whose ack the page never
// got shows as not sent; Retry sends it again with its ref, so the server
// acknowledges it without storing it twice, and the page shows it once.
func retryKeepsRef(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	const room, text = "retries", "did this arrive?"
	p := newPage(t, b, "alice", addScript(loseAckJS))
	p.do(chromedp.Navigate(base + "/#/" + room))
	p.signIn()
	eval[string](p, `window.loseAck = `+js(text))
	p.send(text)
	p.waitJS(`document.querySelector('#pending li.failed [data-action="retry"]')`, "the send marked as not sent")
	p.do(chromedp.Click(chromedp.CSS(`#pending li.failed [data-action="retry"]`)))
	p.waitJS(`document.querySelector('#pending li.sent') || !document.querySelector('#pending li')`, "the retry acknowledged")
	if got := storedTexts(t, base, room); len(got) != 1 || got[0] != text {
		t.Errorf("the room holds %q after the retry, want the message once", got)
	}
	p.do(chromedp.Reload())
	p.waitState("connected", wait)
	p.waitMessage("alice", text)
	if n := p.countMessages("alice", text); n != 1 {
		t.Errorf("after a reload the message shows %d times, want once", n)
	}
}

// malformedHash: a URL whose room is a malformed escape (#/%) opens the
// chat in the default room instead of breaking the page.
func malformedHash(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	p := openChat(t, b, base+"/#/%", "carol")
	p.waitJS(`document.querySelector('#room-list [data-room="lobby"][aria-current]')`, "the default room open")
	p.send("still works")
	p.waitMessage("carol", "still works")
}

// nfkcName: a name typed in full-width letters is the server's NFKC form;
// the page recognises its own messages and replaces their pending bubbles.
func nfkcName(t *testing.T, b context.Context) {
	base := startInstances(t, 1)[0]
	p := newPage(t, b, "\uff54\uff41\uff52\uff4f") // full-width "taro"
	p.do(chromedp.Navigate(base + "/#/lobby"))
	p.signIn()
	p.send("hello everyone")
	p.waitMessage("taro", "hello everyone")
	p.waitJS(`!document.querySelector('#pending li')`, "the pending bubble replaced by the message")
	if !eval[bool](p, messagesJS("taro", "hello everyone")+`[0].classList.contains('own')`) {
		t.Error("the page's own message is not marked as its own")
	}
	if got := eval[string](p, `document.getElementById('me-name').textContent`); got != "taro" {
		t.Errorf("the page shows its user as %q, want taro", got)
	}
}

// startBurstInstance starts an instance whose limits let one client send
// a burst of a thousand messages, and returns its URL.
func startBurstInstance(t *testing.T) string {
	t.Helper()
	cfg := instanceConfig(t)
	cfg.Addr = "127.0.0.1:0"
	cfg.WS.FrameRate, cfg.WS.FrameBurst, cfg.WS.SendQueue = 1e6, 1e6, 4096
	return startInstanceWith(t, cfg).url
}

// boundedTimeline: a busy room keeps at most 1000 items (plus a batch) on
// the page, dropping the oldest, which can be paged back.
func boundedTimeline(t *testing.T, b context.Context) {
	base := startBurstInstance(t)
	const room, n = "busy", 1150 // past the page's bound plus its slack (1100): one trim
	p := openChat(t, b, base+"/#/"+room, "reader")
	// Count the times the page adds to its list: a burst is laid out in
	// batches, not once per message.
	eval[bool](p, `(window.appends = 0, new MutationObserver((rs) => { for (const r of rs) if (r.addedNodes.length) window.appends++; })
		.observe(document.getElementById('messages'), { childList: true }), true)`)
	bot := dialUser(t, base, "bot", room)
	start := time.Now()
	for i := range n {
		if err := bot.Say(room, fmt.Sprintf("message %d", i), fmt.Sprintf("b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("message %d", n-1)
	// A page takes a while to show a burst of a thousand messages, more
	// so on a loaded machine with other pages running.
	p.waitJSFor(messagesJS("bot", last)+`.length > 0`, "the last message", 2*time.Minute)
	appends := eval[int](p, `window.appends`)
	t.Logf("%d messages shown in %v, in %d additions to the list", n, time.Since(start).Round(time.Millisecond), appends)
	if appends > n/4 {
		t.Errorf("the page added to its list %d times for %d messages, want batches (at most %d)", appends, n, n/4)
	}
	// Items: messages and notices (a presence notice may come among them).
	shown := eval[int](p, `document.querySelectorAll('#messages li.msg, #messages li.notice').length`)
	if shown > 1100 || shown < 1000 {
		t.Errorf("the page shows %d items for %d messages, want 1000 to 1100", shown, n)
	}
	if p.countMessages("bot", "message 0") != 0 {
		t.Error("the oldest message is still shown")
	}
	// The dropped ones come back when the reader scrolls up.
	// (Scrolling to the top loads them, as in the history scenarios; a
	// click on the button needs its layout box, which a loaded machine may
	// not have laid out yet.)
	p.waitJS(`!document.getElementById('load-older').hidden`, "the load earlier messages button")
	p.waitJSFor(`(document.getElementById('scroller').scrollTop = 0, document.querySelectorAll('#messages li.msg').length > `+fmt.Sprint(shown)+`)`,
		"older messages paged back", 2*wait)
}

// boundedBackground: a room that is not open keeps at most 1000 items
// (plus a batch) too, and shows them when opened.
func boundedBackground(t *testing.T, b context.Context) {
	base := startBurstInstance(t)
	const room, n = "busy", 1150
	p := openChat(t, b, base+"/#/"+room, "reader")
	p.joinRoom("quiet") // and opens it
	bot := dialUser(t, base, "bot", room)
	for i := range n {
		if err := bot.Say(room, fmt.Sprintf("message %d", i), fmt.Sprintf("b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.waitJSFor(fmt.Sprintf(`document.title.startsWith('(%d)')`, n), "every message counted unread", 2*time.Minute)
	p.openRoom(room)
	p.waitMessage("bot", fmt.Sprintf("message %d", n-1))
	shown := eval[int](p, `document.querySelectorAll('#messages li.msg, #messages li.notice').length`)
	if shown > 1100 || shown < 1000 {
		t.Errorf("the page shows %d items for %d messages, want 1000 to 1100", shown, n)
	}
}

// leftScrolledUp: a room its reader left scrolled up is not trimmed under
// them while they are away (up to twice the bound, as for the open room):
// back in it, they are where they were.
func leftScrolledUp(t *testing.T, b context.Context) {
	base := startBurstInstance(t)
	const room, n = "busy", 1150
	p := openChat(t, b, base+"/#/"+room, "reader")
	bot := dialUser(t, base, "bot", room)
	say := func(prefix string, count int) {
		for i := range count {
			if err := bot.Say(room, fmt.Sprintf("%s %d", prefix, i), fmt.Sprintf("%s%d", prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	say("old", 60)
	p.waitMessage("bot", "old 59")
	p.waitJS(`(document.getElementById('scroller').scrollTop = 0, document.getElementById('scroller').scrollTop === 0)`, "scrolled to the top")
	p.joinRoom("quiet") // and opens it
	say("new", n)
	p.waitJSFor(fmt.Sprintf(`document.title.startsWith('(%d)')`, n), "every message counted unread", 2*time.Minute)
	p.openRoom(room)
	p.waitMessage("bot", fmt.Sprintf("new %d", n-1))
	if p.countMessages("bot", "old 0") != 1 {
		t.Error("the room was trimmed while its reader was away scrolled up")
	}
	if top := eval[float64](p, `document.getElementById('scroller').scrollTop`); top != 0 {
		t.Errorf("back in the room, the reader is at %v px, want where they left it (0)", top)
	}
}
