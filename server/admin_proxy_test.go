package server_test

import (
	"net/http"
	"strings"
	"testing"

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
	get := func(client, tok string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL()+"/api/rooms", nil)
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
