package admin_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admin"
	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/syncbuf"
)

// TestShortToken: a token under 16 bytes after trimming is refused with a
// message saying how to make one; surrounding white space does not count
// and is not part of the token.
func TestShortToken(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "short", "  0123456789abcde \n"} {
		if _, err := admin.New(admin.Config{Token: tok}); err == nil || !strings.Contains(err.Error(), "admin: ") {
			t.Fatalf("token %q: got %v, want refused", tok, err)
		}
	}
	_, err := admin.New(admin.Config{Token: "0123456789abcde"})
	if err == nil || !strings.Contains(err.Error(), "at least 16") || !strings.Contains(err.Error(), "openssl rand") {
		t.Fatalf("got %v, want the length and how to make a token", err)
	}
	h, err := admin.New(admin.Config{Token: " 0123456789abcdef\n", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/api/rooms", nil)
	req.Header.Set("Authorization", "Bearer 0123456789abcdef")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotImplemented { // authorised; no source
		t.Fatalf("trimmed token: got %d, want it accepted (501 without a source)", rec.Code)
	}
}

// TestFailedRequestsThrottled: failed requests are counted and logged
// (sampled, never with the token); after FailureBurst of them an address
// gets 429 with Retry-After for every request, the right token too, until
// FailureEvery has passed; other addresses are not affected.
func TestFailedRequestsThrottled(t *testing.T) {
	t.Parallel()
	const right = "the-right-admin-token-0123456789"
	now := time.Unix(1_700_000_000, 0)
	var logs syncbuf.Buffer
	h, err := admin.New(admin.Config{Token: right, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	do := func(addr, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/api/rooms", nil)
		req.RemoteAddr = addr
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := range admin.FailureBurst {
		if rec := do("198.51.100.7:4000", "guess-secret-"+string(rune('a'+i))); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: got %d, want 401", i+1, rec.Code)
		}
	}
	for _, tok := range []string{"guess-secret-z", right} {
		rec := do("198.51.100.7:4001", tok)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "10" {
			t.Fatalf("after the burst: got %d Retry-After %q, want 429 with 10", rec.Code, rec.Header().Get("Retry-After"))
		}
	}
	if rec := do("203.0.113.9:1", right); rec.Code != http.StatusNotImplemented {
		t.Fatalf("another address: got %d, want it unaffected", rec.Code)
	}
	if got := h.Failures(); got != admin.FailureBurst {
		t.Fatalf("got %d failures, want %d (429s are not failures)", got, admin.FailureBurst)
	}
	now = now.Add(admin.FailureEvery)
	if rec := do("198.51.100.7:4002", right); rec.Code != http.StatusNotImplemented {
		t.Fatalf("after FailureEvery: got %d, want the right token accepted", rec.Code)
	}
	out := logs.String()
	if n := strings.Count(out, "missing or wrong token"); n != 1 || !strings.Contains(out, "198.51.100.7") || strings.Contains(out, "guess-secret") {
		t.Fatalf("got %d log lines %q, want one sampled line naming the client, never the token", n, out)
	}
}

// TestFailedRequestsThrottledPerNetwork: wrong tokens are throttled per
// client as the WebSocket limits count clients. FailureBurst failures from
// as many addresses of one IPv6 network (/64, or the admission's
// IPv6PrefixLen) throttle every address of it; another network is not
// throttled by them and has its own burst; IPv4 stays per address.
func TestFailedRequestsThrottledPerNetwork(t *testing.T) {
	t.Parallel()
	keyWith := func(cfg admission.Config) func(*http.Request) netip.Addr {
		cfg.Logger = quiet
		a, err := admission.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a.ClientKey // as server.New wires it
	}
	cases := []struct {
		name   string
		client func(*http.Request) netip.Addr // nil: the default
		// same returns the i-th address of one network; other is an
		// address of another network.
		same  func(i int) string
		other string
	}{
		{"admission ClientKey, /64", keyWith(admission.Config{}),
			func(i int) string { return fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1) }, "[2001:db8:1:3::1]:4000"},
		{"admission ClientKey, /48", keyWith(admission.Config{IPv6PrefixLen: 48}),
			func(i int) string { return fmt.Sprintf("[2001:db8:1:%x::1]:4000", i+1) }, "[2001:db8:2::1]:4000"},
		{"default, /64", nil,
			func(i int) string { return fmt.Sprintf("[2001:db8:1:2:%x::1]:4000", i+1) }, "[2001:db8:1:3::1]:4000"},
		{"admission ClientKey, IPv4 per address", keyWith(admission.Config{}),
			func(int) string { return "198.51.100.7:4000" }, "198.51.100.8:4000"},
		{"default, IPv4 per address", nil,
			func(int) string { return "198.51.100.7:4000" }, "198.51.100.8:4000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const right = "the-right-admin-token-0123456789"
			h, err := admin.New(admin.Config{Token: right, Logger: quiet, ClientAddr: tc.client, Now: func() time.Time { return time.Unix(1_700_000_000, 0) }})
			if err != nil {
				t.Fatal(err)
			}
			do := func(addr, tok string) *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodGet, "/api/rooms", nil)
				req.RemoteAddr = addr
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			for i := range admin.FailureBurst {
				if rec := do(tc.same(i), "wrong-guess"); rec.Code != http.StatusUnauthorized {
					t.Fatalf("failure %d from %s: got %d, want 401", i+1, tc.same(i), rec.Code)
				}
			}
			for _, tok := range []string{"wrong-guess", right} {
				rec := do(tc.same(admin.FailureBurst), tok)
				if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "10" {
					t.Fatalf("after the burst, from %s: got %d Retry-After %q, want 429 with 10",
						tc.same(admin.FailureBurst), rec.Code, rec.Header().Get("Retry-After"))
				}
			}
			if rec := do(tc.other, right); rec.Code != http.StatusNotImplemented {
				t.Fatalf("another network, right token: got %d, want it unaffected (501 without a source)", rec.Code)
			}
			for i := range admin.FailureBurst {
				if rec := do(tc.other, "wrong-guess"); rec.Code != http.StatusUnauthorized {
					t.Fatalf("another network, failure %d: got %d, want 401 (its own burst)", i+1, rec.Code)
				}
			}
			if rec := do(tc.other, right); rec.Code != http.StatusTooManyRequests {
				t.Fatalf("another network after its burst: got %d, want 429", rec.Code)
			}
			if got := h.Failures(); got != 2*admin.FailureBurst {
				t.Fatalf("got %d failures, want %d", got, 2*admin.FailureBurst)
			}
		})
	}
}
