package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/syncbuf"
)

// Timing of the Caddy the tests run.
const (
	// healthInterval is the tests' CHATSTREAM_HEALTH_INTERVAL: how often
	// Caddy asks each upstream's /readyz, and how long one refused
	// connection keeps an upstream out (fail_duration). It must be longer
	// than lbTryInterval, or a retry could pick the refusing upstream
	// again.
	healthInterval = 500 * time.Millisecond
	// lbTryInterval is the Caddyfile's lb_try_interval: the pause before
	// a request is tried on another upstream.
	lbTryInterval = 250 * time.Millisecond
	// caddyStartWait bounds Caddy's start until it answers.
	caddyStartWait = 15 * time.Second
	// caddyStopWait bounds Caddy's graceful exit after SIGINT; then it is
	// killed.
	caddyStopWait = 5 * time.Second
	// settle bounds the wait for Caddy to act on a change of health: a
	// few health intervals, with room for a loaded machine.
	settle = 10 * time.Second
)

// caddyProc is a Caddy running deploy/Caddyfile for one test, on a free
// loopback port, with its admin endpoint off and its home in a temporary
// directory.
type caddyProc struct {
	// URL is http://127.0.0.1:port.
	URL string

	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// startCaddy runs Caddy in front of upstreams (host:port) until t ends,
// and returns once it proxies a request to one of them.
func startCaddy(t *testing.T, upstreams []string) *caddyProc {
	t.Helper()
	return startCaddyWith(t, upstreams, nil)
}

// startCaddyWith is startCaddy with more placeholders set, such as
// CHATSTREAM_TOKENSERVER.
func startCaddyWith(t *testing.T, upstreams []string, extra map[string]string) *caddyProc {
	t.Helper()
	bin := requireTool(t, "caddy", "caddy")
	port := freePort(t)
	vars := map[string]string{
		"CHATSTREAM_UPSTREAMS":       strings.Join(upstreams, " "),
		"CHATSTREAM_LISTEN":          fmt.Sprintf(":%d", port),
		"CHATSTREAM_BIND":            "127.0.0.1",
		"CHATSTREAM_HEALTH_INTERVAL": healthInterval.String(),
		"CHATSTREAM_CADDY_ADMIN":     "off",
	}
	maps.Copy(vars, extra)
	env := toolEnv(t, vars)
	cmd := exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = env
	c := &caddyProc{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start caddy: %v", err)
	}
	go func() {
		_ = cmd.Wait() // the exit status is read from the log when it matters
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("caddy log:\n%s", c.log.tail(8000))
		}
	})

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(caddyStartWait)
	for {
		select {
		case <-c.done:
			t.Fatalf("caddy exited at start:\n%s", c.log.tail(8000))
		default:
		}
		resp, err := client.Get(c.URL + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // drained for reuse
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not proxy /healthz within %v (last: %v)", caddyStartWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends Caddy gracefully (SIGINT), or kills it after caddyStopWait.
func (c *caddyProc) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt) // it may be exiting already
	select {
	case <-c.done:
	case <-time.After(caddyStopWait):
		_ = c.cmd.Process.Kill() // did not exit in time
		<-c.done
	}
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct{ syncbuf.Buffer }

// tail returns the last n bytes written.
func (l *lockedBuffer) tail(n int) string {
	s := l.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// freePort returns a TCP port free on 127.0.0.1 a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// stub is an upstream that stands in for an instance where only Caddy's
// side is under test: /readyz answers 200 or 503 as set, every other
// request is counted and answered with the client address the instance's
// admission (trusting 127.0.0.1, where Caddy connects from) reads from it.
type stub struct {
	name  string
	srv   *http.Server
	addr  string
	ready atomic.Bool
	hits  atomic.Int64
}

func startStub(t *testing.T, name string, adm *admission.Admission) *stub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stub{name: name, addr: ln.Addr().String()}
	s.ready.Store(true)
	s.srv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" {
				if !s.ready.Load() {
					http.Error(w, "not ready", http.StatusServiceUnavailable)
					return
				}
				_, _ = io.WriteString(w, "ready\n") // the checker may be gone
				return
			}
			s.hits.Add(1)
			_, _ = fmt.Fprintf(w, "%s %s", s.name, adm.ClientAddr(r)) // the client may be gone
		}),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("stub %s: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		_ = s.srv.Close() // Serve's error is checked above
		<-done
	})
	return s
}

// get asks Caddy for path from the loopback address local (an empty
// local lets the system choose) with extra headers, and returns the
// answer's status and body.
func get(t *testing.T, base, local, path string, hdr map[string]string) (int, string) {
	t.Helper()
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	if local != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// TestCaddyRoutesOnlyToReadyInstances runs the real Caddy in front of three
// stub instances: it sends new requests only to instances whose /readyz
// answers 200, takes one back when it is ready again, and passes the
// client's own address in X-Forwarded-For, which the instances' admission
// reads because Caddy's address is trusted, while an address the client
// forged is not believed.
func TestCaddyRoutesOnlyToReadyInstances(t *testing.T) {
	adm, err := admission.New(admission.Config{
		TrustedProxies: []string{"127.0.0.1/32"}, MaxConns: 100,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	stubs := []*stub{startStub(t, "s0", adm), startStub(t, "s1", adm), startStub(t, "s2", adm)}
	caddy := startCaddy(t, []string{stubs[0].addr, stubs[1].addr, stubs[2].addr})

	// hitsDuring returns each stub's requests while n requests go through
	// Caddy, all of which must succeed.
	hitsDuring := func(t *testing.T, n int) []int64 {
		t.Helper()
		before := make([]int64, len(stubs))
		for i, s := range stubs {
			before[i] = s.hits.Load()
		}
		for range n {
			if code, body := get(t, caddy.URL, "", "/", nil); code != http.StatusOK {
				t.Fatalf("GET /: got %d %q, want 200", code, body)
			}
		}
		out := make([]int64, len(stubs))
		for i, s := range stubs {
			out[i] = s.hits.Load() - before[i]
		}
		return out
	}
	// eventually retries cond (a round of requests) until it holds or
	// settle passes.
	eventually := func(t *testing.T, what string, cond func() (bool, []int64)) {
		t.Helper()
		deadline := time.Now().Add(settle)
		for {
			ok, hits := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v (last round's requests per instance: %v)", what, settle, hits)
			}
			time.Sleep(healthInterval / 2)
		}
	}

	t.Run("every ready instance gets requests", func(t *testing.T) {
		eventually(t, "all three used", func() (bool, []int64) {
			h := hitsDuring(t, 30)
			return !slices.Contains(h, 0), h
		})
	})

	t.Run("an instance that is not ready gets no requests", func(t *testing.T) {
		stubs[1].ready.Store(false)
		eventually(t, "s1 left out", func() (bool, []int64) {
			h := hitsDuring(t, 30)
			return h[1] == 0, h
		})
	})

	t.Run("an instance ready again gets requests again", func(t *testing.T) {
		stubs[1].ready.Store(true)
		eventually(t, "s1 taken back", func() (bool, []int64) {
			h := hitsDuring(t, 30)
			return h[1] > 0, h
		})
	})

	t.Run("the instance reads the client address from X-Forwarded-For", func(t *testing.T) {
		// Linux routes all of 127.0.0.0/8 to loopback, so a client can
		// come from an address other than Caddy's.
		local := "127.0.0.1"
		if runtime.GOOS == "linux" {
			local = "127.0.0.2"
		}
		want := netip.MustParseAddr(local)
		tests := []struct {
			name string
			hdr  map[string]string
		}{
			{"no header", nil},
			{"forged header", map[string]string{"X-Forwarded-For": "198.51.100.7"}},
			{"forged header naming a trusted proxy", map[string]string{"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, body := get(t, caddy.URL, local, "/", tt.hdr)
				if code != http.StatusOK {
					t.Fatalf("GET /: got %d %q, want 200", code, body)
				}
				_, addr, _ := strings.Cut(body, " ")
				if addr != want.String() {
					t.Errorf("client address seen by the instance: got %q, want %q", addr, want)
				}
			})
		}
	})
}

// TestCaddyRoutesAuthToTokenServer runs the real Caddy in front of a stub
// instance and a stub token server: /auth/ and everything under it go to
// the token server; the page, /config.json, /ws and look-alike paths go
// to the instance.
func TestCaddyRoutesAuthToTokenServer(t *testing.T) {
	adm, err := admission.New(admission.Config{MaxConns: 100, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	chat := startStub(t, "chat", adm)
	tokens := startStub(t, "tokens", adm)
	caddy := startCaddyWith(t, []string{chat.addr}, map[string]string{"CHATSTREAM_TOKENSERVER": tokens.addr})

	tests := []struct {
		path string
		want *stub
	}{
		{"/auth/login", tokens},
		{"/auth/token", tokens},
		{"/auth/login?next=%2F%23%2Flobby", tokens},
		{"/", chat},
		{"/config.json", chat},
		{"/ws", chat},
		{"/authx", chat},
		{"/static/auth/x", chat},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, caddy.URL, "", tt.path, nil)
			if name, _, _ := strings.Cut(body, " "); code != http.StatusOK || name != tt.want.name {
				t.Errorf("GET %s: got %d from %q, want 200 from %s", tt.path, code, body, tt.want.name)
			}
		})
	}
}
