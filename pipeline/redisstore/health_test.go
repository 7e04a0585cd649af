package redisstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestWritable: a Redis that answers but refuses writes (over maxmemory)
// is not writable, though it still answers Ping; it is again once writes
// work.
func TestWritable(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("changes maxmemory: needs a private redis-server")
	}
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	if err := b.Writable(ctx); err != nil {
		t.Fatalf("writable = %v, want nil", err)
	}
	if err := srv.Client().ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Writable(ctx); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("writable over maxmemory = %v, want ErrUnavailable", err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("ping over maxmemory = %v, want nil: Redis answers", err)
	}
	if err := srv.Client().ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Writable(ctx); err != nil {
		t.Fatalf("writable after maxmemory is lifted = %v, want nil", err)
	}
}

// TestOptionsRefusesNonsense: a --redis value that is neither a URL nor a
// host:port list is refused at once instead of retried forever.
func TestOptionsRefusesNonsense(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"notaurl", "host:", ":6379", "host:port", "host:99999", "a:1,b"} {
		if _, err := redisstore.Options(url); err == nil {
			t.Errorf("Options(%q) = nil error, want a refusal", url)
		}
	}
	for _, url := range []string{"redis://127.0.0.1:6379/0", "127.0.0.1:7000,127.0.0.1:7001", "[::1]:6379"} {
		if _, err := redisstore.Options(url); err != nil {
			t.Errorf("Options(%q) = %v, want nil", url, err)
		}
	}
}
