package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

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

// TestAppendAsyncRefusesWhenFull: while Redis stalls, queued appends are
// bounded: past the queue, AppendAsync refuses at once with ErrOverloaded,
// Saturated says so beforehand, and every queued append is still answered
// once Redis is back.
func TestAppendAsyncRefusesWhenFull(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pauses Redis: needs a private redis-server")
	}
	const maxBatch = 8
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4, MaxBatch: maxBatch, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Saturated("lobby") {
		t.Fatal("Saturated before anything was queued")
	}
	srv.Pause()
	answered := make(chan error, 1000)
	queued, refusedAt := 0, -1
	for i := range 1000 {
		m := message.NewMessage(fmt.Sprint("m", i), []byte("hi"))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		err := b.AppendAsync(m, func(_ pipeline.Appended, err error) { answered <- err })
		if errors.Is(err, pipeline.ErrOverloaded) {
			refusedAt = i
			break
		}
		if err != nil {
			t.Fatalf("AppendAsync %d: %v", i, err)
		}
		queued++
		if i == 0 {
			time.Sleep(50 * time.Millisecond) // the batcher takes the first batch and stalls on it
		}
	}
	// At most one batch in flight plus the queue (4 batches).
	if refusedAt < 0 || queued > 5*maxBatch+maxBatch {
		t.Fatalf("queued %d appends into a stalled Redis (refused at %d), want a refusal after at most %d", queued, refusedAt, 6*maxBatch)
	}
	if !b.Saturated("lobby") {
		t.Error("not Saturated while AppendAsync refuses")
	}
	srv.Resume()
	for range queued {
		select {
		case <-answered: // stored, or failed by the round trip's timeout
		case <-time.After(10 * time.Second):
			t.Fatalf("a queued append was never answered")
		}
	}
	if b.Saturated("lobby") {
		t.Error("still Saturated once every queued append was answered")
	}
}
