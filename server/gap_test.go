package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestFeedGapResyncsMembers: when a partition's bus has been trimmed past
// the position this instance delivered, the members of that partition's
// rooms are closed with 1012 (so they resume from the room streams), once,
// and members of other partitions stay.
func TestFeedGapResyncsMembers(t *testing.T) {
	rs := testredis.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Addr: "127.0.0.1:0", Backend: b, Logger: log, ReportEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-srv.Pipeline().Running()

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
	victim, bystander := join("alice", gapRoom), join("bob", otherRoom)

	// The gap room's bus now starts at 2000-0; this instance "delivered"
	// only up to 1000-0 on that partition.
	p := pipeline.PartitionOf(gapRoom, 4)
	if err := rs.Client().XAdd(ctx, &redis.XAddArgs{Stream: b.Keys().Bus(p), ID: "2000-0", Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	positions := make([]string, 4)
	positions[p] = "1000-0"
	srv.checkGapsAt(ctx, b, positions)

	for range victim.Frames() {
	}
	if !websocket.IsCloseError(victim.CloseErr, 1012) {
		t.Fatalf("member of the gap's partition ended with %v, want close 1012", victim.CloseErr)
	}
	select {
	case f, ok := <-bystander.Frames():
		if !ok {
			t.Fatalf("member of another partition was closed: %v", bystander.CloseErr)
		}
		_ = f // a presence frame is fine
	case <-time.After(200 * time.Millisecond):
	}
	// The same gap is handled once: a new member is not closed again.
	again := join("carol", gapRoom)
	srv.checkGapsAt(ctx, b, positions)
	select {
	case <-again.Frames():
		if again.CloseErr != nil {
			t.Fatalf("the same gap closed a member twice: %v", again.CloseErr)
		}
	case <-time.After(200 * time.Millisecond):
	}
}
