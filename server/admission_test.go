package server_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/server"
)

// quick bounds how long /healthz may take while /ws is full.
const quick = time.Second

// from poses a request as coming from the client address addr, through a
// proxy on loopback.
func from(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

// connect dials base as user with header h and closes the connection when
// the test ends.
func connect(t *testing.T, base, user string, h http.Header) *wstest.Client {
	t.Helper()
	c, err := wstest.DialHeader(base, user, h)
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(c.Close)
	return c
}

// refusedUpgrade dials base with header h and fails unless the upgrade is
// refused with status, retryAfter seconds and a plain-text reason.
func refusedUpgrade(t *testing.T, base string, h http.Header, status, retryAfter int) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(strings.Replace(base, "http", "ws", 1)+"/ws?user=mallory", h)
	if err == nil {
		conn.Close()
		t.Fatalf("upgrade with %v admitted, want HTTP %d", h, status)
	}
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("upgrade with %v: %v, want HTTP %d", h, err, status)
	}
	body, _ := io.ReadAll(resp.Body) // gorilla keeps the first KiB
	if resp.StatusCode != status {
		t.Fatalf("upgrade with %v: HTTP %d %q, want %d", h, resp.StatusCode, body, status)
	}
	if got := resp.Header.Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Fatalf("upgrade with %v: Retry-After %q, want %d", h, got, retryAfter)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || len(body) == 0 {
		t.Fatalf("upgrade with %v: %q %q, want a plain-text reason", h, ct, body)
	}
}

// healthy fails unless /healthz answers 200 within quick.
func healthy(t *testing.T, base string) {
	t.Helper()
	client := &http.Client{Timeout: quick}
	start := time.Now()
	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("/healthz while /ws is full: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz while /ws is full: HTTP %d after %v, want 200", resp.StatusCode, time.Since(start))
	}
}

// chat fails unless a message from a reaches b.
func chat(t *testing.T, a, b *wstest.Client, ref string) {
	t.Helper()
	for _, c := range []*wstest.Client{a, b} {
		if err := c.Join("lobby", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Await("joined", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Say("lobby", "still here", ref); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" && f.Ref == ref }, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" && f.Ref == ref }, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAdmissionLimits: behind a trusted proxy, upgrades beyond
// --max-conns-per-ip are refused with 429 and beyond --max-conns with 503,
// both with Retry-After, while /healthz answers at once and admitted
// clients chat; a closed socket frees its slot.
func TestAdmissionLimits(t *testing.T) {
	t.Parallel()
	const retry = 2
	srv := testserver.Start(t, server.Config{Admission: admission.Config{
		MaxConns: 4, MaxConnsPerIP: 2, TrustedProxies: []string{"127.0.0.1"}, RetryAfter: retry * time.Second,
	}})
	base := srv.URL()

	alice := connect(t, base, "alice", from("203.0.113.1"))
	connect(t, base, "alice2", from("203.0.113.1"))
	for range 5 {
		refusedUpgrade(t, base, from("203.0.113.1"), http.StatusTooManyRequests, retry)
	}
	bob := connect(t, base, "bob", from("203.0.113.2"))
	carol := connect(t, base, "carol", from("203.0.113.3"))
	for i := range 5 {
		refusedUpgrade(t, base, from(fmt.Sprintf("198.51.100.%d", i)), http.StatusServiceUnavailable, retry)
	}
	healthy(t, base)
	chat(t, alice, bob, "full-1")

	carol.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		dave, err := wstest.DialHeader(base, "dave", from("198.51.100.1"))
		if err == nil {
			t.Cleanup(dave.Close)
			chat(t, dave, alice, "freed-1")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol's slot not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdmissionIgnoresSpoofedHeader: without trusted proxies every
// upgrade over loopback comes from 127.0.0.1, whatever X-Forwarded-For
// claims.
func TestAdmissionIgnoresSpoofedHeader(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{Admission: admission.Config{MaxConnsPerIP: 2}})
	base := srv.URL()
	alice := connect(t, base, "alice", from("203.0.113.1"))
	bob := connect(t, base, "bob", from("203.0.113.2"))
	for i := range 5 {
		refusedUpgrade(t, base, from(fmt.Sprintf("198.51.100.%d", i)), http.StatusTooManyRequests, int(admission.DefaultRetryAfter/time.Second))
	}
	healthy(t, base)
	chat(t, alice, bob, "spoof-1")
}

// TestHeaderLimit: headers above server.MaxHeaderBytes are refused with
// 431 before any handler runs.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{})
	req, err := http.NewRequest(http.MethodGet, srv.URL()+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("x", server.MaxHeaderBytes+8<<10))
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("HTTP %d for %d bytes of headers, want 431", resp.StatusCode, server.MaxHeaderBytes+8<<10)
	}
}
