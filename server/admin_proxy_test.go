package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/admin"
	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
)

// TestAdminThrottlesClientsBehindProxy: behind a trusted proxy, wrong
// admin tokens throttle the client that sent them (the address the proxy
// forwards), not the proxy: an operator behind the same proxy still gets
// in.
func TestAdminThrottlesClientsBehindProxy(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("k", 32)
	srv := testserver.Start(t, server.Config{AdminToken: token, Admission: admission.Config{TrustedProxies: []string{"127.0.0.1"}}})
	get := func(client, tok string) int { return adminGet(t, srv.URL(), client, tok) }
	throttled := false
	for range 10 {
		if get("203.0.113.9", "wrong-token") == http.StatusTooManyRequests {
			throttled = true
			break
		}
	}
	if !throttled {
		t.Fatal("ten wrong tokens from one client were never throttled")
	}
	if code := get("198.51.100.7", token); code == http.StatusTooManyRequests || code == http.StatusUnauthorized {
		t.Fatalf("the operator, another client behind the same proxy, got %d", code)
	}
}

// TestServerThrottlesIPv6Network: the server's admin API counts wrong
// tokens per client as its WebSocket limits do: behind a trusted proxy,
// clients rotating through the addresses of one IPv6 /64 are throttled
// after FailureBurst failures, while a client of another /64 still gets
// in.
func TestServerThrottlesIPv6Network(t *testing.T) {
	t.Parallel()
	right := strings.Repeat("k", 32)
	srv := testserver.Start(t, server.Config{AdminToken: right,
		Admission: admission.Config{TrustedProxies: []string{"127.0.0.1"}}})
	get := func(client, tok string) int { return adminGet(t, srv.URL(), client, tok) }
	for i := range admin.FailureBurst {
		if code := get(fmt.Sprintf("2001:db8:7:1::%x", i+1), "wrong-guess"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: got %d, want 401", i+1, code)
		}
	}
	if code := get("2001:db8:7:1:ffff::1", right); code != http.StatusTooManyRequests {
		t.Fatalf("a new address of the same /64 after the burst: got %d, want 429", code)
	}
	if code := get("2001:db8:7:2::1", right); code != http.StatusNotImplemented {
		t.Fatalf("a client of another /64: got %d, want it unaffected (501 over memory)", code)
	}
}

// adminGet asks the admin API of the server at base for its rooms with
// token tok, as client behind a proxy at 127.0.0.1; it returns the status.
func adminGet(t *testing.T, base, client, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/api/rooms", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", client)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
