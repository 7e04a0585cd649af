package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
)

// TestReadyzNeedsWrites: /readyz fails while Redis refuses writes (over
// maxmemory), names no internal address, and recovers with Redis.
func TestReadyzNeedsWrites(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("changes maxmemory: needs a private redis-server")
	}
	log := slog.New(slog.DiscardHandler)
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	in := testserver.Start(t, server.Config{Backend: backend.Redis(b, log), Logger: log})
	ready := func() (int, string) {
		t.Helper()
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(in.URL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := ready(); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}
	ctx := context.Background()
	if err := rs.Client().ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	code, body := ready()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz over maxmemory = %d %q, want 503", code, body)
	}
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "OOM") {
		t.Fatalf("/readyz body %q names internal details", body)
	}
	if err := rs.Client().ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if code, body := ready(); code != http.StatusOK {
		t.Fatalf("/readyz after recovery = %d %q, want 200", code, body)
	}
}
