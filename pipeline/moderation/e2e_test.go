package moderation_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// TestEndToEnd runs a real server on a real Redis with a chain loaded from
// a file: a rejected message reaches its sender as rejected with the reason
// and the moderator and lands in the dead-letter stream; a masked message
// reaches the room masked; the per-user rate limit is kept in Redis.
func TestEndToEnd(t *testing.T) {
	rs := testredis.Start(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "words.txt"), []byte("darn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `moderators:
  - kind: wordlist
    name: profanity
    action: mask
    file: words.txt
  - kind: rules
    name: spam-rules
    rules:
      - name: crypto
        when: text.matches("(?i)free\\s+crypto") && room == "lobby"
        action: reject
        reason: no crypto offers in the lobby
  - kind: ratelimit
    per_user: {rate: 3, per: 1m}
`
	path := filepath.Join(dir, "moderation.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: quiet, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := moderation.LoadFile(path, moderation.Env{Logger: quiet, Redis: b.Client(), RedisPrefix: rs.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, server.Config{
		Backend: backend.Redis(b, quiet), Logger: quiet, Moderators: chain.Moderators(),
		WS: ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
	})

	alice := dialJoin(t, srv.URL(), "alice")
	bob := dialJoin(t, srv.URL(), "bob")

	// Rejected: the sender gets rejected with reason and moderator.
	if err := alice.Say("lobby", "FREE  crypto today", "r1"); err != nil {
		t.Fatal(err)
	}
	f := await(t, alice, "r1")
	if f.Type != "error" || f.Code != pipeline.CodeRejected || f.Message != "no crypto offers in the lobby" || f.Moderator != "spam-rules" {
		t.Fatalf("got %s, want rejected by spam-rules", f.Raw)
	}
	// ... and the message is in the dead-letter stream with moderator and reason.
	entries, err := rs.Client().XRange(context.Background(), b.Keys().Rejected(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want 1", len(entries))
	}
	dl, err := redisstore.DecodeEntry(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := dl.Metadata; string(dl.Payload) != "FREE  crypto today" || got.Get(pipeline.MetaModerator) != "spam-rules" ||
		got.Get(pipeline.MetaReason) != "no crypto offers in the lobby" || got.Get(pipeline.MetaCode) != pipeline.CodeRejected || got.Get(pipeline.MetaUser) != "alice" {
		t.Fatalf("dead letter %q %v", dl.Payload, dl.Metadata)
	}

	// Masked: everyone sees the masked text.
	if err := alice.Say("lobby", "well DARN it", "r2"); err != nil {
		t.Fatal(err)
	}
	if f := await(t, alice, "r2"); f.Type != "ack" {
		t.Fatalf("got %s, want ack", f.Raw)
	}
	m, err := bob.Await("message", wait)
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "well **** it" {
		t.Fatalf("bob saw %q, want the masked text", m.Text)
	}

	// Rate limited through Redis: the limit runs after the rules, so the
	// rejected message used no token; r2 to r4 fit, r5 is refused.
	for _, ref := range []string{"r3", "r4"} {
		if err := alice.Say("lobby", "hello", ref); err != nil {
			t.Fatal(err)
		}
		if f := await(t, alice, ref); f.Type != "ack" {
			t.Fatalf("%s: got %s", ref, f.Raw)
		}
	}
	if err := alice.Say("lobby", "hello again", "r5"); err != nil {
		t.Fatal(err)
	}
	f = await(t, alice, "r5")
	if f.Type != "error" || f.Code != pipeline.CodeRateLimited || f.Retry <= 0 || f.Moderator != "ratelimit" {
		t.Fatalf("got %s, want rate_limited by ratelimit", f.Raw)
	}
	if n, err := rs.Client().Exists(context.Background(), rs.Prefix+":ratelimit:user:alice").Result(); err != nil || n != 1 {
		t.Fatalf("rate limit key: %d %v", n, err)
	}
	st := chain.Stats()
	if st["spam-rules"].Rules["crypto"].Rejected != 1 || st["profanity"].Rewritten != 1 || st["ratelimit"].Rejected != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func dialJoin(t *testing.T, url, user string) *wstest.Client {
	t.Helper()
	c, err := wstest.Dial(url, user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Join("lobby", 0); err != nil {
		t.Fatal(err)
	}
	if f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" || f.Type == "error" }, wait); err != nil || f.Type != "joined" {
		t.Fatalf("join: %v %s", err, f.Raw)
	}
	return c
}

func await(t *testing.T, c *wstest.Client, ref string) wstest.Frame {
	t.Helper()
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
