package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestContract runs the backend contract suite against Redis Streams.
func TestContract(t *testing.T) {
	srv := testredis.Start(t)
	n := 0
	storetest.Run(t, func(t *testing.T, roomMaxLen int) pipeline.Backend {
		n++
		b, err := redisstore.New(redisstore.Config{
			URL: srv.URL, Prefix: srv.Prefix + "x" + string(rune('a'+n)), RoomMaxLen: int64(roomMaxLen), Partitions: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestRoomsAndDecodeEntry: Rooms lists the rooms written, and DecodeEntry
// reads their entries back with seq and metadata.
func TestRoomsAndDecodeEntry(t *testing.T) {
	srv := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	var seqs []string
	for _, room := range []string{"lobby", "b-room", "a:room"} {
		m := message.NewMessage("id-"+room, []byte("hi "+room))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, "alice")
		seq, err := b.Append(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	rooms, err := b.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rooms) != "[a:room b-room lobby]" {
		t.Fatalf("rooms = %v", rooms)
	}
	xs, err := b.Client().XRange(ctx, b.Keys().Room("lobby"), "-", "+").Result()
	if err != nil || len(xs) != 1 {
		t.Fatalf("xrange = %v, %v", xs, err)
	}
	msg, err := redisstore.DecodeEntry(xs[0])
	if err != nil {
		t.Fatal(err)
	}
	if msg.UUID != "id-lobby" || string(msg.Payload) != "hi lobby" || msg.Metadata.Get(pipeline.MetaSeq) != seqs[0] || msg.Metadata.Get(pipeline.MetaUser) != "alice" {
		t.Fatalf("decoded %s %q %v", msg.UUID, msg.Payload, msg.Metadata)
	}
	if _, err := redisstore.DecodeEntry(redis.XMessage{ID: "1-1", Values: map[string]any{"x": "y"}}); !errors.Is(err, redisstore.ErrUndecodable) {
		t.Fatalf("garbage entry: %v, want ErrUndecodable", err)
	}
	if got := b.Keys().RoomOfKey(b.Keys().Room("a:room")); got != "a:room" {
		t.Fatalf("RoomOfKey = %q", got)
	}
	if got := b.Keys().RoomOfKey(b.Keys().Bus(1)); got != "" {
		t.Fatalf("RoomOfKey(bus) = %q, want empty", got)
	}
}
