package server_test

import (
	"net/http"
	"testing"

	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
)

// TestStaticETags: page files carry a content ETag and revalidate to 304;
// the security headers are on every answer.
func TestStaticETags(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{})

	for _, p := range []string{"/", "/chatstream-client.js", "/style.css"} {
		resp, err := http.Get(srv.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		tag := resp.Header.Get("ETag")
		if resp.StatusCode != http.StatusOK || tag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("%s: status %d, ETag %q, Cache-Control %q", p, resp.StatusCode, tag, resp.Header.Get("Cache-Control"))
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL()+p, nil)
		req.Header.Set("If-None-Match", tag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with If-None-Match: status %d, want 304", p, resp.StatusCode)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: 304 without the security headers", p)
		}
	}
}
