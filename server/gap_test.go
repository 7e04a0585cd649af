package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
)

// TestFeedGapResyncsMembers: when a partition's bus has been trimmed past
// the position this instance delivered, the members of that partition's
// rooms are closed with 1012 (so they resume from the room streams), once,
// and members of other partitions stay.
func TestFeedGapResyncsMembers(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, BusMaxLen: 10, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, server.Config{Backend: backend.Redis(b, log), Logger: log, ReportEvery: 50 * time.Millisecond})

	// Two rooms in different partitions.
	gapRoom, otherRoom := "lobby", ""
	for _, r := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if pipeline.PartitionOf(r, 4) != pipeline.PartitionOf(gapRoom, 4) {
			otherRoom = r
			break
		}
	}
	join := func(user, room string) *wstest.Client {
		c, err := wstest.Dial(srv.URL(), user)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Join(room, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Await("joined", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return c
	}
	say := func(c *wstest.Client, room, ref string) {
		if err := c.Send(map[string]any{"type": "send", "room": room, "text": "hi", "ref": ref}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" && f.Ref == ref }, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	victim, bystander := join("alice", gapRoom), join("bob", otherRoom)
	// Both partitions now have a position on this instance.
	say(victim, gapRoom, "v1")
	say(bystander, otherRoom, "b1")

	// The gap room's bus gets more entries than it keeps at once (they
	// are not chat messages: the instance reads past them) and is trimmed
	// to its length in the same step, so entries after this instance's
	// position are gone before it could read them.
	ctx := context.Background()
	bus := b.Keys().Bus(pipeline.PartitionOf(gapRoom, 4))
	tx := rs.Client().TxPipeline()
	for range 30 {
		tx.XAdd(ctx, &redis.XAddArgs{Stream: bus, Values: []any{"x", "y"}})
	}
	tx.XTrimMaxLen(ctx, bus, 10)
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	closed := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-victim.Frames():
		case <-closed:
			t.Fatal("member of the gap's partition still open after 10s, want close 1012")
		}
	}
	if !websocket.IsCloseError(victim.CloseErr, 1012) {
		t.Fatalf("member of the gap's partition ended with %v, want close 1012", victim.CloseErr)
	}
	// The same gap is handled once: a new member of the room and the
	// member of the other partition stay through several more checks.
	again := join("carol", gapRoom)
	deadline := time.After(300 * time.Millisecond)
	for done := false; !done; {
		select {
		case _, ok := <-again.Frames():
			if !ok {
				t.Fatalf("the same gap closed a member twice: %v", again.CloseErr)
			}
		case _, ok := <-bystander.Frames():
			if !ok {
				t.Fatalf("member of another partition was closed: %v", bystander.CloseErr)
			}
		case <-deadline:
			done = true
		}
	}
}
