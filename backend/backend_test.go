package backend_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

var quiet = slog.New(slog.DiscardHandler)

func newMessage(room, text string) *message.Message {
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, "alice")
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return m
}

// exercise checks that every part of b works on one and the same storage:
// what Store appends, History reads and Buses and Instances see, and the
// presence of two instances is shared.
func exercise(t *testing.T, b *backend.Backend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Health.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	stored, err := b.Store.Append(ctx, newMessage("lobby", "hello"))
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	seq := stored.Seq
	page, err := b.History.History(ctx, "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Seq != seq {
		t.Fatalf("history = %+v, %v; want the message at %s", page, err, seq)
	}
	p := pipeline.PartitionOf("lobby", b.Feed.Partitions())
	if st, err := b.Buses.BusState(ctx, p); err != nil || st.Oldest != seq || st.Last != seq || st.Epoch == "" {
		t.Fatalf("state of partition %d = %+v, %v; want oldest and last %s and an epoch", p, st, err, seq)
	}
	if err := b.Instances.RecordInstance(ctx, pipeline.InstanceInfo{ID: "i1", Positions: make([]string, b.Feed.Partitions())}); err != nil {
		t.Fatalf("record instance: %v", err)
	}
	a, c := b.NewPresence("a"), b.NewPresence("c")
	if _, err := a.Sync(ctx, map[string][]string{"lobby": {"alice"}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Sync(ctx, map[string][]string{"lobby": {"carol"}})
	if err != nil || len(got["lobby"]) != 2 {
		t.Fatalf("presence seen by a second instance = %v, %v; want alice and carol", got, err)
	}
}

func TestOpenMemory(t *testing.T) {
	t.Parallel()
	b, err := backend.Open(backend.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if b.Kind != "memory" || b.Streams != nil || b.SharedState != nil {
		t.Fatalf("memory backend: kind %q, streams %v, shared state %v; want memory and neither", b.Kind, b.Streams, b.SharedState)
	}
	exercise(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Health.Ping(context.Background()); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("ping after close = %v, want ErrUnavailable", err)
	}
}

func TestOpenRedis(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	b, err := backend.Open(backend.Config{RedisURL: rs.URL, RedisPrefix: rs.Prefix, Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if b.Kind != "redis" || b.Streams == nil || b.SharedState == nil || b.RedisPrefix != rs.Prefix {
		t.Fatalf("redis backend: kind %q, streams %v, shared state %v, prefix %q", b.Kind, b.Streams, b.SharedState, b.RedisPrefix)
	}
	exercise(t, b)
	// The tools' reader reads the same deployment.
	var read []replay.Entry
	err = b.Streams.Messages(context.Background(), replay.Query{Room: "lobby"}, func(e replay.Entry) error {
		read = append(read, e)
		return nil
	})
	if err != nil || len(read) != 1 || read[0].Text != "hello" {
		t.Fatalf("stream reader read %+v, %v; want the appended message", read, err)
	}
	if env := b.ModerationEnv(quiet); env.Redis == nil || env.RedisPrefix != rs.Prefix {
		t.Fatalf("moderation env = %+v, want the deployment's Redis and prefix", env)
	}
}

func TestOpenRefusesBadConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  backend.Config
	}{
		{"too many partitions", backend.Config{RedisURL: "redis://127.0.0.1:1/0", Partitions: 1000}},
		{"bad prefix", backend.Config{RedisURL: "redis://127.0.0.1:1/0", RedisPrefix: "a{b}"}},
		{"bad url", backend.Config{RedisURL: "redis://:badport"}},
		{"negative room length", backend.Config{RoomMaxLen: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := backend.Open(tc.cfg); err == nil {
				_ = b.Close()
				t.Fatalf("Open(%+v) = nil error, want a refusal", tc.cfg)
			}
		})
	}
}
