package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// TestToolsOnCluster: on a three-primary Redis Cluster, streams, replay
// --all-rooms and moderation test --all-rooms each find the rooms of every
// primary (their SCAN visits every primary).
func TestToolsOnCluster(t *testing.T) {
	t.Parallel()
	cl := testredis.StartCluster(t)
	const partitions = redisstore.DefaultPartitions
	b, err := redisstore.New(redisstore.Config{URL: cl.URL, Prefix: cl.Prefix, Partitions: partitions, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	var rooms []string
	perNode := map[string]int{}
	for i := 0; len(rooms) < 6; i++ {
		room := fmt.Sprintf("room%02d", i)
		node := cl.PrimaryOf(b.Keys().Room(room)).Addr
		if perNode[node] == 2 {
			continue
		}
		perNode[node]++
		rooms = append(rooms, room)
		m := message.NewMessage(fmt.Sprintf("id-%d", i), []byte("darn, hello from "+room))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, "alice")
		m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := b.Append(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	flags := redisFlags{Redis: cl.URL, RedisPrefix: cl.Prefix, Partitions: partitions}

	t.Run("streams", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := streamsCmd{Conn: flags, Limits: trimFlags{RoomMaxlen: 500, BusMaxlen: 600}, Format: "json"}
		if err := c.run(ctx, tio); err != nil {
			t.Fatal(err)
		}
		var rep replay.Report
		if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rep.Rooms {
			got = append(got, r.Room)
		}
		if !slices.Equal(got, rooms) {
			t.Fatalf("streams lists rooms %v, want %v", got, rooms)
		}
		if len(rep.Buses) != partitions {
			t.Fatalf("streams lists %d buses, want %d", len(rep.Buses), partitions)
		}
	})

	t.Run("replay --all-rooms", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := replayCmd{Conn: flags, AllRooms: true, Format: "jsonl", Speed: "1x"}
		if err := c.run(ctx, tio); err != nil {
			t.Fatal(err)
		}
		for _, room := range rooms {
			if !strings.Contains(out.String(), "hello from "+room) {
				t.Errorf("replay --all-rooms lacks %s:\n%s", room, out.String())
			}
		}
	})

	t.Run("rejected --requeue checks partitions", func(t *testing.T) {
		// The check looks for the room under every other partition count
		// (keys of many slots in one pipeline).
		const wrong = partitions - 1
		room := ""
		for _, r := range rooms {
			if (redisstore.Keys{Prefix: cl.Prefix, Partitions: wrong}).Room(r) != b.Keys().Room(r) {
				room = r
				break
			}
		}
		m := message.NewMessage("dl-cluster", []byte("again"))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, "eve")
		if err := b.DeadLetter(ctx, m); err != nil {
			t.Fatal(err)
		}
		xs, err := b.Client().XRevRangeN(ctx, b.Keys().Rejected(), "+", "-", 1).Result()
		if err != nil || len(xs) != 1 {
			t.Fatalf("dead letter: %v %v", xs, err)
		}
		bad := flags
		bad.Partitions = wrong
		c := rejectedCmd{Conn: bad, Requeue: []string{xs[0].ID}, Format: "text", NoModeration: true}
		tio, _, _ := bufferIO()
		if err := c.run(ctx, tio); exitCode(err) != exitNotFound || !strings.Contains(err.Error(), b.Keys().Room(room)) {
			t.Fatalf("requeue with --partitions %d: %v (exit %d), want exit %d naming %s", wrong, err, exitCode(err), exitNotFound, b.Keys().Room(room))
		}
		c.Conn = flags
		tio, out, _ := bufferIO()
		if err := c.run(ctx, tio); err != nil || !strings.HasPrefix(out.String(), xs[0].ID+" -> "+room+"/") {
			t.Fatalf("requeue with the right partitions: %v, printed %q", err, out)
		}
	})

	t.Run("moderation test --all-rooms", func(t *testing.T) {
		dir := t.TempDir()
		modWrite(t, dir, "mod.yaml", modConfig)
		c := &moderationTestCmd{
			Config: filepath.Join(dir, "mod.yaml"), Since: "1h", Width: 200, Batch: 2, AllRooms: true, JSON: true,
			Redis: cl.URL, RedisPrefix: cl.Prefix, Partitions: partitions,
		}
		var out strings.Builder
		if err := c.run(ctx, &out, io.Discard, quiet); err != nil {
			t.Fatal(err)
		}
		for _, room := range rooms {
			if !strings.Contains(out.String(), room) {
				t.Errorf("moderation test --all-rooms lacks %s:\n%s", room, out.String())
			}
		}
	})
}

// TestRedisWaitFlags: --redis-wait-timeout's default is redisstore's, both
// flags reach serve, and waiting for replicas without Redis is refused.
func TestRedisWaitFlags(t *testing.T) {
	t.Parallel()
	c, _ := modParse(t, "serve")
	if got := c.Serve.RedisWait.RedisWaitTimeout; got != redisstore.DefaultWaitTimeout {
		t.Fatalf("--redis-wait-timeout defaults to %v, want redisstore.DefaultWaitTimeout %v", got, redisstore.DefaultWaitTimeout)
	}
	c, _ = modParse(t, "serve", "--redis-wait-replicas", "2", "--redis-wait-timeout", "250ms")
	if got := c.Serve.RedisWait; got.RedisWaitReplicas != 2 || got.RedisWaitTimeout != 250*time.Millisecond {
		t.Fatalf("parsed %+v", got)
	}
	err := c.Serve.Run(&globals{Ctx: context.Background(), Log: quiet})
	if err == nil || !strings.Contains(err.Error(), "--redis-wait-replicas") || !strings.Contains(err.Error(), "--redis") {
		t.Fatalf("serve --redis-wait-replicas 2 without --redis: %v, want an error naming both flags", err)
	}
}
