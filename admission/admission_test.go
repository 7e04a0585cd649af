package admission_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/syncbuf"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// loopback trusts the test's own requests as a proxy, so they pose as any
// client address through X-Forwarded-For.
var loopback = []string{"127.0.0.1"}

// wait bounds every wait for the server to notice a closed connection.
const wait = 5 * time.Second

// gate is a real HTTP server on loopback behind an Admission. Its handler
// answers 200 at once and, when holding, keeps the response open until
// the client closes it or the test ends: a stand-in for a WebSocket.
type gate struct {
	a      *admission.Admission
	url    string
	client *http.Client
}

// startGate serves cfg's Admission; with loopback among its trusted
// proxies a request poses as any client address through X-Forwarded-For.
func startGate(t *testing.T, cfg admission.Config, hold bool) *gate {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	a, err := admission.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	ts := httptest.NewServer(a.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if hold {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})))
	tr := &http.Transport{}
	t.Cleanup(func() {
		close(release)
		tr.CloseIdleConnections()
		ts.Close()
	})
	return &gate{a: a, url: ts.URL, client: &http.Client{Transport: tr}}
}

// open sends a request from the client address from and returns its
// response. An admitted response stays open until its body is closed,
// which the test's end does.
func (g *gate) open(t *testing.T, from string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", from)
	resp, err := g.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	return resp
}

// admitted fails unless resp is an admission.
func admitted(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: HTTP %d %q, want 200", what, resp.StatusCode, body)
	}
}

// refused fails unless resp is a refusal with status, a Retry-After in
// [minRetry, maxRetry] seconds, a reason containing text and a closed
// connection.
func refused(t *testing.T, resp *http.Response, what string, status, minRetry, maxRetry int, text string) {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the refusal: %v", what, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("%s: HTTP %d %q, want %d", what, resp.StatusCode, body, status)
	}
	if retry, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || retry < minRetry || retry > maxRetry {
		t.Fatalf("%s: Retry-After %q, want %d to %d seconds", what, resp.Header.Get("Retry-After"), minRetry, maxRetry)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("%s: Content-Type %q, want text/plain", what, ct)
	}
	if !strings.Contains(string(body), text) {
		t.Fatalf("%s: reason %q, want it to contain %q", what, body, text)
	}
	if !resp.Close {
		t.Fatalf("%s: connection kept open after a refusal", what)
	}
}

// eventually polls cond until it holds or wait has passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func refusedCount(a *admission.Admission, r admission.Reason) uint64 { return a.Stats().Refused[r] }

// TestMaxConnsPerIP: an address at its cap is refused with 429 while
// others are admitted; a closed connection frees its slot.
func TestMaxConnsPerIP(t *testing.T) {
	t.Parallel()
	g := startGate(t, admission.Config{TrustedProxies: loopback, MaxConns: 10, MaxConnsPerIP: 2, RetryAfter: 3 * time.Second}, true)
	first := g.open(t, "203.0.113.1")
	admitted(t, first, "first from A")
	admitted(t, g.open(t, "203.0.113.1"), "second from A")
	refused(t, g.open(t, "203.0.113.1"), "third from A", http.StatusTooManyRequests, 3, 3, "too many connections from your address")
	admitted(t, g.open(t, "203.0.113.2"), "first from B")

	if s := g.a.Stats(); s.Open != 3 || s.Addrs != 2 || s.Admitted != 3 || s.Refused[admission.ReasonMaxConnsPerIP] != 1 {
		t.Fatalf("stats %+v, want 3 open from 2 addresses, 3 admitted, 1 refused for max_conns_per_ip", s)
	}
	first.Body.Close()
	eventually(t, "A's first connection released", func() bool { return g.a.Stats().Open == 2 })
	admitted(t, g.open(t, "203.0.113.1"), "A after a close")
}

// TestSpoofedHeaderIgnored: without trusted proxies every request over
// loopback is 127.0.0.1, whatever X-Forwarded-For says.
func TestSpoofedHeaderIgnored(t *testing.T) {
	t.Parallel()
	g := startGate(t, admission.Config{MaxConnsPerIP: 1}, true)
	admitted(t, g.open(t, "203.0.113.1"), "first")
	refused(t, g.open(t, "203.0.113.2"), "second, another spoofed address", http.StatusTooManyRequests, 1, 60, "too many connections")
}

// TestMaxConns: a full instance refuses everyone with 503.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	g := startGate(t, admission.Config{TrustedProxies: loopback, MaxConns: 3, MaxConnsPerIP: 2}, true)
	first := g.open(t, "203.0.113.1")
	admitted(t, first, "A1")
	admitted(t, g.open(t, "203.0.113.1"), "A2")
	admitted(t, g.open(t, "203.0.113.2"), "B1")
	retry := int(admission.DefaultRetryAfter / time.Second)
	refused(t, g.open(t, "203.0.113.3"), "C1", http.StatusServiceUnavailable, retry, retry, "connection limit")
	refused(t, g.open(t, "203.0.113.2"), "B2", http.StatusServiceUnavailable, retry, retry, "connection limit")
	if n := refusedCount(g.a, admission.ReasonMaxConns); n != 2 {
		t.Fatalf("refused for max_conns: %d, want 2", n)
	}
	first.Body.Close()
	eventually(t, "a slot freed", func() bool { return g.a.Stats().Open == 2 })
	admitted(t, g.open(t, "203.0.113.3"), "C after a close")
}

// TestHandshakeRate: an address past its burst is refused with 429 and the
// time until its next token; other addresses are not affected, and the
// address is admitted again once a token has come.
func TestHandshakeRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		rate     float64
		burst    int
		minRetry int
		maxRetry int
		refills  bool // wait for the next token and try again
	}{
		{name: "slow refill", rate: 0.1, burst: 2, minRetry: 1, maxRetry: 10},
		{name: "fast refill", rate: 2, burst: 1, minRetry: 1, maxRetry: 1, refills: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := startGate(t, admission.Config{TrustedProxies: loopback, HandshakeRate: tt.rate, HandshakeBurst: tt.burst}, false)
			for i := range tt.burst {
				admitted(t, g.open(t, "203.0.113.1"), fmt.Sprintf("handshake %d of the burst", i+1))
			}
			refused(t, g.open(t, "203.0.113.1"), "past the burst", http.StatusTooManyRequests, tt.minRetry, tt.maxRetry, "too many connection attempts")
			admitted(t, g.open(t, "203.0.113.2"), "another address")
			if n := refusedCount(g.a, admission.ReasonHandshakeRate); n != 1 {
				t.Fatalf("refused for handshake_rate: %d, want 1", n)
			}
			if !tt.refills {
				return
			}
			time.Sleep(time.Duration(float64(time.Second) / tt.rate))
			admitted(t, g.open(t, "203.0.113.1"), "after a token came")
		})
	}
}

// TestLimiterLRUBound: the handshake limiters of many addresses are kept
// in a bounded LRU; a forgotten address starts with a full burst, a
// remembered one does not.
func TestLimiterLRUBound(t *testing.T) {
	t.Parallel()
	const maxAddrs, addrs = 8, 40
	g := startGate(t, admission.Config{TrustedProxies: loopback, MaxAddrs: maxAddrs, HandshakeRate: 0.001, HandshakeBurst: 1}, false)
	addr := func(i int) string { return fmt.Sprintf("198.51.100.%d", i) }
	for i := range addrs {
		admitted(t, g.open(t, addr(i)), "first handshake of "+addr(i))
		if n := g.a.Stats().Tracked; n > maxAddrs {
			t.Fatalf("%d addresses tracked, want at most %d", n, maxAddrs)
		}
	}
	if n := g.a.Stats().Tracked; n != maxAddrs {
		t.Fatalf("%d addresses tracked, want %d", n, maxAddrs)
	}
	refused(t, g.open(t, addr(addrs-1)), "a remembered address", http.StatusTooManyRequests, 1, 1000, "too many connection attempts")
	admitted(t, g.open(t, addr(0)), "a forgotten address")
}

// TestIPv6Prefix: the addresses of one IPv6 /64 are one client address.
func TestIPv6Prefix(t *testing.T) {
	t.Parallel()
	g := startGate(t, admission.Config{TrustedProxies: loopback, MaxConnsPerIP: 1}, true)
	admitted(t, g.open(t, "2001:db8:0:1::1"), "first of a /64")
	refused(t, g.open(t, "2001:db8:0:1::2"), "second of the /64", http.StatusTooManyRequests, 1, 60, "too many connections")
	admitted(t, g.open(t, "2001:db8:0:2::1"), "another /64")
}

// TestClose: after Close every request is refused with 503; admitted
// connections stay.
func TestClose(t *testing.T) {
	t.Parallel()
	g := startGate(t, admission.Config{TrustedProxies: loopback}, true)
	admitted(t, g.open(t, "203.0.113.1"), "before Close")
	g.a.Close()
	refused(t, g.open(t, "203.0.113.2"), "after Close", http.StatusServiceUnavailable, 1, 60, "shutting down")
	if s := g.a.Stats(); s.Open != 1 || s.Refused[admission.ReasonShuttingDown] != 1 {
		t.Fatalf("stats %+v, want 1 open, 1 refused for shutting_down", s)
	}
}

// TestConcurrentAdmissions: under concurrent requests the open connections
// never exceed MaxConns nor MaxConnsPerIP, every request is either admitted
// or refused, and every slot is given back.
func TestConcurrentAdmissions(t *testing.T) {
	t.Parallel()
	const maxConns, perIP, workers, each = 6, 2, 8, 50
	a, err := admission.New(admission.Config{MaxConns: maxConns, MaxConnsPerIP: perIP, HandshakeRate: 1e6, HandshakeBurst: 1e6, TrustedProxies: []string{"192.0.2.1"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var open, peak atomic.Int64
	var perAddr sync.Map // address -> *atomic.Int64
	h := a.Wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		n := open.Add(1)
		defer open.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		c, _ := perAddr.LoadOrStore(r.Header.Get("X-Forwarded-For"), new(atomic.Int64))
		if m := c.(*atomic.Int64).Add(1); m > perIP {
			t.Errorf("%d connections from %s, cap %d", m, r.Header.Get("X-Forwarded-For"), perIP)
		}
		defer c.(*atomic.Int64).Add(-1)
		time.Sleep(time.Millisecond)
	}))
	var wg sync.WaitGroup
	var ok, no atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := httptest.NewRequest(http.MethodGet, "/ws", nil)
				r.RemoteAddr = "192.0.2.1:1"
				r.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", (w+i)%5))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code == http.StatusOK {
					ok.Add(1)
				} else {
					no.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > maxConns {
		t.Fatalf("peak %d open, cap %d", p, maxConns)
	}
	s := a.Stats()
	var refusedTotal uint64
	for _, n := range s.Refused {
		refusedTotal += n
	}
	if s.Open != 0 || s.Addrs != 0 || s.Admitted != uint64(ok.Load()) || refusedTotal != uint64(no.Load()) || ok.Load()+no.Load() != workers*each {
		t.Fatalf("stats %+v after %d admitted and %d refused, want all slots back and the same counts", s, ok.Load(), no.Load())
	}
}

// syncBuffer is a log destination safe for the refusal log's timer.
type syncBuffer struct{ syncbuf.Buffer }

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(s.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "websocket upgrades refused" {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusalsLoggedInAggregate: a flood of refusals is one line at once
// and one with the rest of the counts when the interval ends (here: at
// Close), never a line per request.
func TestRefusalsLoggedInAggregate(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	g := startGate(t, admission.Config{TrustedProxies: loopback, HandshakeRate: 0.001, HandshakeBurst: 1, LogEvery: time.Hour, Logger: log}, false)
	const floods = 30
	admitted(t, g.open(t, "203.0.113.1"), "first")
	for range floods {
		refused(t, g.open(t, "203.0.113.1"), "flood", http.StatusTooManyRequests, 1, 1000, "too many connection attempts")
	}
	if n := len(buf.lines(t)); n != 1 {
		t.Fatalf("%d refusal lines during the flood, want 1", n)
	}
	g.a.Close()
	lines := buf.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d refusal lines after Close, want 2", len(lines))
	}
	var total float64
	for _, l := range lines {
		total += l["handshake_rate"].(float64)
		if l["last_addr"] != "203.0.113.1" || l["level"] != "WARN" {
			t.Fatalf("refusal line %v, want last_addr 203.0.113.1 at WARN", l)
		}
	}
	if total != floods {
		t.Fatalf("refusals logged: %v, want %d", total, floods)
	}
}

// TestValidate: configurations that cannot work are refused by New.
func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  admission.Config
		want string
	}{
		{name: "negative max conns", cfg: admission.Config{MaxConns: -1}, want: "limits must be positive"},
		{name: "negative per ip", cfg: admission.Config{MaxConnsPerIP: -1}, want: "limits must be positive"},
		{name: "negative burst", cfg: admission.Config{HandshakeBurst: -1}, want: "limits must be positive"},
		{name: "negative rate", cfg: admission.Config{HandshakeRate: -1}, want: "handshake rate"},
		{name: "prefix too long", cfg: admission.Config{IPv6PrefixLen: 129}, want: "IPv6 prefix length 129"},
		{name: "negative retry", cfg: admission.Config{RetryAfter: -time.Second}, want: "durations must be positive"},
		{name: "bad proxy", cfg: admission.Config{TrustedProxies: []string{"10.0.0.0/8", "10.0.0.0/33"}}, want: `trusted proxy "10.0.0.0/33"`},
		{name: "host name as proxy", cfg: admission.Config{TrustedProxies: []string{"proxy.local"}}, want: `trusted proxy "proxy.local"`},
		{name: "mapped proxy", cfg: admission.Config{TrustedProxies: []string{"::ffff:10.0.0.0/104"}}, want: "as IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quiet
			_, err := admission.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := admission.New(admission.Config{TrustedProxies: []string{"10.0.0.0/8", " 192.0.2.1", "2001:db8::/32"}, Logger: quiet}); err != nil {
		t.Fatalf("New with valid proxies: %v", err)
	}
}

// TestMaxConnsFor: the derived limit leaves max(100, limit/10) descriptors.
func TestMaxConnsFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		limit uint64
		want  int
	}{
		{limit: 0, want: 1},
		{limit: 100, want: 1},
		{limit: 101, want: 1},
		{limit: 256, want: 156},
		{limit: 1024, want: 922},
		{limit: 20000, want: 18000},
		{limit: 1 << 20, want: 943719},
		{limit: ^uint64(0), want: admission.MaxDerivedConns},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatUint(tt.limit, 10), func(t *testing.T) {
			if got := admission.MaxConnsFor(tt.limit); got != tt.want {
				t.Fatalf("MaxConnsFor(%d) = %d, want %d", tt.limit, got, tt.want)
			}
		})
	}
	if n := admission.DerivedMaxConns(); n < 1 || n > admission.MaxDerivedConns {
		t.Fatalf("DerivedMaxConns() = %d, want 1 to %d", n, admission.MaxDerivedConns)
	}
}

// TestReasons: every reason has a stable label and the status of its kind.
func TestReasons(t *testing.T) {
	t.Parallel()
	want := map[admission.Reason]struct {
		label  string
		status int
	}{
		admission.ReasonMaxConns:      {"max_conns", 503},
		admission.ReasonMaxConnsPerIP: {"max_conns_per_ip", 429},
		admission.ReasonHandshakeRate: {"handshake_rate", 429},
		admission.ReasonShuttingDown:  {"shutting_down", 503},
	}
	rs := admission.Reasons()
	if len(rs) != len(want) {
		t.Fatalf("%d reasons, want %d", len(rs), len(want))
	}
	for _, r := range rs {
		if got := (struct {
			label  string
			status int
		}{r.String(), r.Status()}); got != want[r] {
			t.Fatalf("reason %d: %v, want %v", int(r), got, want[r])
		}
	}
}
