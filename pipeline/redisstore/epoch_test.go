package redisstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestFlushAllStartsNewEpochs: after Redis loses everything (FLUSHALL, as
// a restart without persistence), the next append starts a new epoch for
// the room and its bus; its seq may be lower than before; a send
// remembered before is stored again, its original being lost. Another
// instance's appends after it stay in the new epoch's clock too, though
// that instance last stored further ahead.
func TestFlushAllStartsNewEpochs(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("FLUSHALL needs a private redis-server")
	}
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	other := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	ctx := context.Background()
	p := pipeline.PartitionOf("lobby", b.Partitions())
	// A seq far in the future, as if the clock had run ahead before the loss.
	future := pipeline.Seq{MS: uint64(time.Now().Add(time.Hour).UnixMilli())}
	mustAppend(t, b, send("lobby", "", "first"))
	if err := srv.Client().XAdd(ctx, &redis.XAddArgs{Stream: b.Keys().Bus(p), ID: future.String(), Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, other, send("lobby", "", "other's, before"))
	before := mustAppend(t, b, send("lobby", "c-1", "before"))
	busBefore, err := b.BusState(ctx, p)
	if err != nil || busBefore.Epoch == "" || busBefore.Last != before.Seq {
		t.Fatalf("bus state before = %+v, %v", busBefore, err)
	}
	// The other instance's last ID is now before's: FLUSHALL loses it.
	otherBefore := mustAppend(t, other, send("lobby", "", "other's, last before"))
	if err := srv.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if st, err := b.BusState(ctx, p); err != nil || st != (pipeline.BusState{}) {
		t.Fatalf("bus state after FLUSHALL = %+v, %v; want empty", st, err)
	}
	after := mustAppend(t, b, send("lobby", "c-1", "after"))
	if after.Duplicate || after.Epoch == before.Epoch {
		t.Fatalf("after FLUSHALL: %+v, want a new message in a new epoch (was %q)", after, before.Epoch)
	}
	if pipeline.CompareSeq(after.Seq, before.Seq) >= 0 {
		t.Fatalf("seq after FLUSHALL %s is not below %s: the clock of the lost data is forgotten", after.Seq, before.Seq)
	}
	busAfter, err := b.BusState(ctx, p)
	if err != nil || busAfter.Epoch == "" || busAfter.Epoch == busBefore.Epoch || busAfter.Last != after.Seq {
		t.Fatalf("bus state after = %+v, %v; want a new epoch (was %q), last %s", busAfter, err, busBefore.Epoch, after.Seq)
	}
	// The bus stands again, and the other instance's last ID, of the lost
	// bus, is ahead of the clock: its next message is stored in the new
	// epoch's clock, after the message before it, not after its lost one.
	later := mustAppend(t, other, send("lobby", "", "other's, after"))
	if later.Epoch != after.Epoch || pipeline.CompareSeq(later.Seq, after.Seq) <= 0 || pipeline.CompareSeq(later.Seq, before.Seq) >= 0 {
		t.Fatalf("other instance after FLUSHALL: %+v; want epoch %s, seq above %s and below the lost %s (its last was %s)", later, after.Epoch, after.Seq, before.Seq, otherBefore.Seq)
	}
}

// TestDeletedStreamStartsNewEpoch: a room or bus stream deleted without
// its epoch key (by an operator, or lost while the key survived) gets a new
// epoch with its next message.
func TestDeletedStreamStartsNewEpoch(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	ctx := context.Background()
	p := pipeline.PartitionOf("lobby", b.Partitions())
	first := mustAppend(t, b, send("lobby", "", "one"))
	bus1, _ := b.BusState(ctx, p)
	if err := srv.Client().Del(ctx, b.Keys().Room("lobby"), b.Keys().Bus(p)).Err(); err != nil {
		t.Fatal(err)
	}
	if page, err := b.History(ctx, "lobby", pipeline.HistoryQuery{Limit: 5}); err != nil || page.Epoch != "" || len(page.Messages) != 0 {
		t.Fatalf("history of a deleted room = %+v, %v; want empty, no epoch", page, err)
	}
	second := mustAppend(t, b, send("lobby", "", "two"))
	bus2, _ := b.BusState(ctx, p)
	if second.Epoch == first.Epoch || bus2.Epoch == bus1.Epoch || bus2.Epoch == "" {
		t.Fatalf("epochs after deleting the streams: room %q→%q, bus %q→%q; want new ones", first.Epoch, second.Epoch, bus1.Epoch, bus2.Epoch)
	}
}

// TestSeqsNeverGoBack: when a stream's last ID is ahead of the server's
// clock (the clock went back, or another primary's clock ran ahead), new
// seqs still follow it, in the room and in its bus, in the same epoch.
func TestSeqsNeverGoBack(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	ctx := context.Background()
	p := pipeline.PartitionOf("lobby", b.Partitions())
	for _, tc := range []struct {
		name, stream string
		ahead        time.Duration
	}{
		{"room stream ahead", b.Keys().Room("lobby"), time.Hour},
		{"bus ahead", b.Keys().Bus(p), 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := mustAppend(t, b, send("lobby", "", "before"))
			future := pipeline.Seq{MS: uint64(time.Now().Add(tc.ahead).UnixMilli()), N: 7}
			if err := srv.Client().XAdd(ctx, &redis.XAddArgs{Stream: tc.stream, ID: future.String(), Values: []any{"x", "y"}}).Err(); err != nil {
				t.Fatal(err)
			}
			a := mustAppend(t, b, send("lobby", "", "after"))
			b2 := mustAppend(t, b, send("lobby", "", "after 2"))
			if a.Seq != future.Next().String() || b2.Seq != future.Next().Next().String() {
				t.Fatalf("seqs after a stream at %s: %s, %s; want %s, %s", future, a.Seq, b2.Seq, future.Next(), future.Next().Next())
			}
			if a.Epoch != first.Epoch || b2.Epoch != first.Epoch {
				t.Fatalf("epoch changed: %q → %q, %q", first.Epoch, a.Epoch, b2.Epoch)
			}
			st, err := b.BusState(ctx, p)
			if err != nil || st.Last != b2.Seq {
				t.Fatalf("bus last = %+v, %v; want %s", st, err, b2.Seq)
			}
		})
	}
}

// TestRoomTTL: an append sets the room TTL on the room's stream and epoch,
// and every append refreshes it; the send record lives for the
// idempotency window; a negative RoomTTL keeps rooms without a TTL.
func TestRoomTTL(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	ctx := context.Background()
	c := srv.Client()
	pttl := func(t *testing.T, key string) time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	const ttl, window = time.Hour, 10 * time.Minute
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix + "a", Partitions: 4, RoomTTL: ttl, IdempotencyWindow: window})
	k := b.Keys()
	mustAppend(t, b, send("lobby", "c-1", "one"))
	for _, key := range []string{k.Room("lobby"), k.Epoch("lobby")} {
		if d := pttl(t, key); d <= ttl-time.Minute || d > ttl {
			t.Fatalf("PTTL %s = %v, want about %v", key, d, ttl)
		}
	}
	if d := pttl(t, k.Sent("lobby", "alice", "c-1")); d <= window-time.Minute || d > window {
		t.Fatalf("PTTL of the send record = %v, want about %v", d, window)
	}
	for _, key := range []string{k.Bus(pipeline.PartitionOf("lobby", 4)), k.BusEpoch(pipeline.PartitionOf("lobby", 4))} {
		if d := pttl(t, key); d != -1 {
			t.Fatalf("PTTL %s = %v, want none: buses do not expire", key, d)
		}
	}
	// Shorten the TTLs by hand: the next append puts them back.
	for _, key := range []string{k.Room("lobby"), k.Epoch("lobby")} {
		if err := c.PExpire(ctx, key, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(t, b, send("lobby", "", "two"))
	for _, key := range []string{k.Room("lobby"), k.Epoch("lobby")} {
		if d := pttl(t, key); d <= ttl-time.Minute {
			t.Fatalf("PTTL %s after another append = %v, want it refreshed to about %v", key, d, ttl)
		}
	}

	never := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix + "b", Partitions: 4, RoomTTL: pipeline.NoRoomTTL})
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: never.Keys().Room("lobby"), Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.PExpire(ctx, never.Keys().Room("lobby"), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, never, send("lobby", "", "one"))
	for _, key := range []string{never.Keys().Room("lobby"), never.Keys().Epoch("lobby")} {
		if d := pttl(t, key); d != -1 {
			t.Fatalf("PTTL %s with NoRoomTTL = %v, want none", key, d)
		}
	}
}

// TestKeys: the new keys share the room's hash tag, never look like a
// room stream, and a send's key names neither user nor ref and tells
// apart sends whose user and ref would concatenate alike.
func TestKeys(t *testing.T) {
	k := redisstore.Keys{Prefix: "chat", Partitions: 16}
	tag := fmt.Sprintf("chat:{p%02d}:", pipeline.PartitionOf("lobby", 16))
	sent := k.Sent("lobby", "alice", "c-1")
	for _, key := range []string{k.Epoch("lobby"), sent, k.BusOf("lobby"), k.BusEpoch(pipeline.PartitionOf("lobby", 16))} {
		if !strings.HasPrefix(key, tag) {
			t.Errorf("%s is not in the room's slot %s", key, tag)
		}
		if room := k.RoomOfKey(key); room != "" {
			t.Errorf("RoomOfKey(%s) = %q, want none", key, room)
		}
	}
	if strings.Contains(sent, "alice") || strings.Contains(sent, "c-1") {
		t.Errorf("send key %s names its user or ref", sent)
	}
	for _, other := range []string{k.Sent("lobby", "alic", "ec-1"), k.Sent("lobby", "alice", "c-2"), k.Sent("lobby", "bob", "c-1"), k.Sent("kitchen", "alice", "c-1")} {
		if other == sent {
			t.Errorf("two sends share the key %s", sent)
		}
	}
}

// TestConfigLimits: idempotency windows and room TTLs below a millisecond
// are refused (Redis counts milliseconds), a negative room TTL means never;
// batches in flight are between 1 and the partitions.
func TestConfigLimits(t *testing.T) {
	cases := []struct {
		name string
		cfg  redisstore.Config
		ok   bool
	}{
		{"defaults", redisstore.Config{URL: "redis://127.0.0.1:1/0"}, true},
		{"no room TTL", redisstore.Config{URL: "redis://127.0.0.1:1/0", RoomTTL: pipeline.NoRoomTTL}, true},
		{"negative window", redisstore.Config{URL: "redis://127.0.0.1:1/0", IdempotencyWindow: -time.Second}, false},
		{"window below 1ms", redisstore.Config{URL: "redis://127.0.0.1:1/0", IdempotencyWindow: time.Microsecond}, false},
		{"room TTL below 1ms", redisstore.Config{URL: "redis://127.0.0.1:1/0", RoomTTL: time.Microsecond}, false},
		{"two batches in flight", redisstore.Config{URL: "redis://127.0.0.1:1/0", Partitions: 4, InFlight: 2}, true},
		{"more batches in flight than partitions", redisstore.Config{URL: "redis://127.0.0.1:1/0", Partitions: 4, InFlight: 5}, false},
		{"negative in flight", redisstore.Config{URL: "redis://127.0.0.1:1/0", InFlight: -1}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := redisstore.New(tc.cfg)
			if b != nil {
				_ = b.Close() // never used
			}
			if (err == nil) != tc.ok {
				t.Fatalf("New(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
			}
		})
	}
}
