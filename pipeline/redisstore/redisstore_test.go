package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestContract runs the backend contract suite against Redis Streams, each
// subtest under its own key prefix of one server: with subscriptions that
// block reading the buses (Config.PollBus), and with pushed ones (the
// default).
func TestContract(t *testing.T) {
	srv := testredis.Start(t)
	var n atomic.Int64
	for _, push := range []bool{false, true} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			storetest.Run(t, storetest.Harness{
				New: func(t *testing.T, o storetest.Options) pipeline.Backend {
					return newBackend(t, redisstore.Config{
						URL: srv.URL, Prefix: fmt.Sprintf("%sx%d", srv.Prefix, n.Add(1)), Partitions: 4,
						RoomMaxLen: int64(o.RoomMaxLen), RoomTTL: o.RoomTTL, IdempotencyWindow: o.IdempotencyWindow,
						PollBus: !push,
					})
				},
				// Lose deletes the room's stream and epoch, as a Redis
				// restarted without them would.
				Lose: func(t *testing.T, b pipeline.Backend, _ storetest.Options, room string) {
					k := b.(*redisstore.Backend).Keys()
					if err := srv.Client().Del(context.Background(), k.Room(room), k.Epoch(room)).Err(); err != nil {
						t.Fatal(err)
					}
				},
			})
		})
	}
}

// newBackend returns a backend made with cfg, closed by t.Cleanup.
func newBackend(t testing.TB, cfg redisstore.Config) *redisstore.Backend {
	t.Helper()
	b, err := redisstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// send builds a message of room by alice with ref ("" for none).
func send(room, ref, text string) *message.Message {
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, "alice")
	if ref != "" {
		m.Metadata.Set(pipeline.MetaRef, ref)
	}
	return m
}

// mustAppend appends m and fails the test on an error.
func mustAppend(t *testing.T, b *redisstore.Backend, m *message.Message) pipeline.Appended {
	t.Helper()
	a, err := b.Append(context.Background(), m)
	if err != nil {
		t.Fatalf("append %q: %v", m.Payload, err)
	}
	return a
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
		a, err := b.Append(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, a.Seq)
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

// TestOptions: a redis:// URL (rediss:// with TLS, unix:// for a socket)
// selects one server and its database; a list of addresses, even of one,
// selects a Cluster; nonsense is refused.
func TestOptions(t *testing.T) {
	cases := []struct {
		name, url string
		addrs     []string
		db        int
		cluster   bool
		err       bool
	}{
		{"url", "redis://127.0.0.1:6380/2", []string{"127.0.0.1:6380"}, 2, false, false},
		{"url with password", "redis://:secret@h:1/0", []string{"h:1"}, 0, false, false},
		{"cluster list", "a:7000, b:7001,c:7002", []string{"a:7000", "b:7001", "c:7002"}, 0, true, false},
		{"one cluster seed", "a:7000", []string{"a:7000"}, 0, true, false},
		{"unix socket", "unix:///run/redis/redis.sock?db=3", []string{"/run/redis/redis.sock"}, 3, false, false},
		{"unix socket without a path", "unix://", nil, 0, false, true},
		{"empty list", " , ", nil, 0, false, true},
		{"bad scheme", "http://x:1", nil, 0, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := redisstore.Options(tc.url)
			if tc.err {
				if err == nil {
					t.Fatalf("Options(%q) = %+v, want an error", tc.url, o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(o.Addrs) != fmt.Sprint(tc.addrs) || o.DB != tc.db || o.IsClusterMode != tc.cluster {
				t.Fatalf("Options(%q) = addrs %v db %d cluster %v, want %v db %d cluster %v", tc.url, o.Addrs, o.DB, o.IsClusterMode, tc.addrs, tc.db, tc.cluster)
			}
		})
	}
	for url, tls := range map[string]bool{"rediss://h:1/0": true, "redis://h:1/0": false} {
		if o, err := redisstore.Options(url); err != nil || (o.TLSConfig != nil) != tls {
			t.Fatalf("Options(%q): TLS %v, %v; want TLS %v", url, o != nil && o.TLSConfig != nil, err, tls)
		}
	}
}

// TestUnixSocket: a backend given unix:///path stores, reads history and
// delivers over the Unix socket alone: the server's TCP port is closed
// first, so nothing can fall back to it.
func TestUnixSocket(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{UnixSocket: true})
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	t.Cleanup(func() { _ = admin.Close() })
	// port 0: Redis stops listening on TCP.
	if err := admin.ConfigSet(ctx, "port", "0").Err(); err != nil {
		t.Fatal(err)
	}
	tcpOpts, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", tcpOpts.Addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("the TCP port still answers")
	}
	const parts = 4
	b, err := redisstore.New(redisstore.Config{URL: srv.SocketURL, Prefix: srv.Prefix, Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	first := mustAppend(t, b, send("lobby", "r1", "one"))
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := b.Subscribe(subCtx, pipeline.PartitionOf("lobby", parts), first.Seq)
	if err != nil {
		t.Fatal(err)
	}
	second := mustAppend(t, b, send("lobby", "r2", "two"))
	if dup := mustAppend(t, b, send("lobby", "r2", "two")); !dup.Duplicate || dup.Seq != second.Seq {
		t.Fatalf("retry = %+v, want a duplicate of %s", dup, second.Seq)
	}
	m := next(t, ch)
	m.Ack()
	if string(m.Payload) != "two" || m.Metadata.Get(pipeline.MetaSeq) != second.Seq {
		t.Fatalf("delivered %q seq %s, want two at %s", m.Payload, m.Metadata.Get(pipeline.MetaSeq), second.Seq)
	}
	page, err := b.History(ctx, "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 || page.Messages[0].Seq != first.Seq || page.Messages[1].Seq != second.Seq {
		t.Fatalf("history = %+v, want %s then %s", page.Messages, first.Seq, second.Seq)
	}
}

// TestAppendAfterScriptFlush: when Redis has lost its script cache (a
// restart or a failover), appends still succeed, each stored once.
func TestAppendAfterScriptFlush(t *testing.T) {
	srv := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	appendOne := func(text string) {
		t.Helper()
		m := message.NewMessage("id-"+text, []byte(text))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		if _, err := b.Append(ctx, m); err != nil {
			t.Fatalf("append %s: %v", text, err)
		}
	}
	appendOne("before")
	if err := srv.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	appendOne("after")
	n, err := srv.Client().XLen(ctx, b.Keys().Room("lobby")).Result()
	if err != nil || n != 2 {
		t.Fatalf("room stream length = %d, %v; want 2", n, err)
	}
}

// TestOneAddressOfPlainRedis: a host:port list names Cluster nodes; given
// the address of a single Redis, the health checks say how to name one
// instead.
func TestOneAddressOfPlainRedis(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URL, "redis://"), "/0")
	b := newBackend(t, redisstore.Config{URL: addr, Prefix: srv.Prefix, Partitions: 4})
	for name, check := range map[string]func(context.Context) error{
		"Ping": b.Ping, "Writable": b.Writable, "WritableEveryPartition": b.WritableEveryPartition,
	} {
		err := check(context.Background())
		if !errors.Is(err, pipeline.ErrUnavailable) || !strings.Contains(err.Error(), "redis://host:port/0") {
			t.Fatalf("%s = %v, want unavailable saying to use redis://host:port/0", name, err)
		}
	}
}
