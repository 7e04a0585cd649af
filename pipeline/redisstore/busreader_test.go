package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestBusSubscriberPubSub runs Watermill's universal Pub/Sub suite against
// BusSubscriber, with watermill-redisstream's publisher writing the same
// entry layout (one XADD per message).
//
// Features, for fan-out mode: every subscription reads the whole stream
// from its configured position (here the oldest entry), so new subscribers
// receive old messages and messages survive their subscribers
// (Persistent), in stream order (GuaranteedOrder, also for several
// subscribers on one topic, since each delivers every message in order).
// Not covered:
//   - TestConsumerGroups: there are no consumer groups (ConsumerGroups
//     false; the suite skips it, so no group constructor is given).
//   - TestReconnect: no RestartServiceCommand, so the suite skips it. It
//     expects one subscription to survive a broker restart, but a
//     subscription closes its channel when a read fails and its caller
//     subscribes again after the last entry it handled (pipeline.Delivery
//     does); TestBusSubscriberReadFailureCloses and
//     TestBusSubscriberPushedLossCloses check that.
//
// BlockTime is shortened so that Close, which waits for blocked reads,
// keeps the suite fast; the default is exercised by the backend's tests.
//
// pushed=true runs it against the Pushed mode, with a publisher that adds
// each message to the stream and pushes it (pushPublisher), as the append
// script does by default (Config.PollBus false).
func TestBusSubscriberPubSub(t *testing.T) {
	srv := testredis.Start(t)
	for _, pushed := range []bool{false, true} {
		t.Run(fmt.Sprintf("pushed=%v", pushed), func(t *testing.T) {
			features := tests.Features{
				ConsumerGroups:                   false,
				ExactlyOnceDelivery:              false,
				GuaranteedOrder:                  true,
				Persistent:                       true,
				RequireSingleInstance:            false,
				NewSubscriberReceivesOldMessages: true,
				// Every test's streams share the server: give them its prefix.
				GenerateTopicFunc: func(tc tests.TestContext) string {
					return fmt.Sprintf("%s:topic-%v-%s", srv.Prefix, pushed, tc.TestID)
				},
			}
			newPubSub := func(t *testing.T) (message.Publisher, message.Subscriber) {
				sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: 100 * time.Millisecond, Pushed: pushed},
					newClient(t, srv, func(o *redis.UniversalOptions) { o.PoolSize = 64 }), nil)
				if err != nil {
					t.Fatal(err)
				}
				if pushed {
					return pushPublisher{newClient(t, srv, nil)}, sub
				}
				// The publisher closes its client; the subscriber does not.
				pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
					Client:     newClient(t, srv, nil),
					Marshaller: redisstream.DefaultMarshallerUnmarshaller{},
				}, nil)
				if err != nil {
					t.Fatal(err)
				}
				return pub, sub
			}
			tests.TestPubSub(t, features, newPubSub, nil)
		})
	}
}

// newClient returns a client of srv, adjusted by opts (nil: as parsed),
// closed by t.Cleanup.
func newClient(t *testing.T, srv *testredis.Server, opts func(*redis.UniversalOptions)) redis.UniversalClient {
	t.Helper()
	o, err := redisstore.Options(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if opts != nil {
		opts(o)
	}
	c := redis.NewUniversalClient(o)
	t.Cleanup(func() { _ = c.Close() }) // a publisher may have closed it already
	return c
}

// xreadCounter is a go-redis hook counting the XREADs a client sends.
type xreadCounter struct{ n atomic.Int64 }

func (h *xreadCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *xreadCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xread" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *xreadCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// addEntries adds n entries in Watermill's layout to stream and returns
// their IDs and UUIDs.
func addEntries(t *testing.T, c redis.UniversalClient, stream string, n int) (ids, uuids []string) {
	t.Helper()
	pipe := c.Pipeline()
	cmds := make([]*redis.StringCmd, n)
	for i := range n {
		id := uuid.NewString()
		uuids = append(uuids, id)
		cmds[i] = pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{
			redisstream.UUIDHeaderKey, id, "payload", fmt.Sprintf("m%d", i), "metadata", "",
		}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		ids = append(ids, c.Val())
	}
	return ids, uuids
}

// next receives one message from ch within a few seconds.
func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed early")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return nil
}

// TestBusSubscriberReadsBatches: a subscription delivers every entry after
// its position in order, with MetaSeq = entry ID, taking up to ReadCount
// entries per read and reading at most one batch ahead of the messages
// acked.
func TestBusSubscriberReadsBatches(t *testing.T) {
	srv := testredis.Start(t)
	cases := []struct {
		name             string
		entries, count   int
		after            int // index of the entry to start after; -1: from the oldest
		wantReadsAtLeast int // reads needed to deliver everything
	}{
		{name: "bound of 256", entries: 1000, count: 256, after: -1, wantReadsAtLeast: 4},
		{name: "one per read", entries: 20, count: 1, after: -1, wantReadsAtLeast: 20},
		{name: "after an entry", entries: 100, count: 16, after: 41, wantReadsAtLeast: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream := srv.Prefix + ":" + strings.ReplaceAll(tc.name, " ", "-")
			c := newClient(t, srv, nil)
			var reads xreadCounter
			c.AddHook(&reads)
			ids, uuids := addEntries(t, c, stream, tc.entries)
			cfg := redisstore.BusSubscriberConfig{ReadCount: tc.count, BlockTime: 100 * time.Millisecond}
			if tc.after >= 0 {
				cfg.After = ids[tc.after]
				ids, uuids = ids[tc.after+1:], uuids[tc.after+1:]
			}
			ch := subscribeBus(t, context.Background(), c, cfg, stream)
			for i := range ids {
				m := next(t, ch)
				if got := m.Metadata.Get(pipeline.MetaSeq); got != ids[i] || m.UUID != uuids[i] {
					t.Fatalf("message %d: got seq %s uuid %s, want %s %s", i, got, m.UUID, ids[i], uuids[i])
				}
				if got := m.Metadata.Get(redisstore.MetaUndecodable); got != "" {
					t.Fatalf("message %d marked undecodable: %s", i, got)
				}
				// Before this ack, the subscription has read the
				// batch of this message and at most the next one.
				if n, most := reads.n.Load(), int64(i/tc.count+2); n > most {
					t.Fatalf("%d reads before acking message %d, want at most %d", n, i, most)
				}
				m.Ack()
			}
			// The last read blocks: everything was read.
			if n, least := reads.n.Load(), int64(tc.wantReadsAtLeast); n < least {
				t.Fatalf("%d reads, want at least %d", n, least)
			}
		})
	}
}

// TestBusSubscriberReadsAheadAfterFullBatch: while a message is not acked,
// the subscription reads the next batch only when the message's batch was
// full (a backlog), and holds at most that one batch ahead.
func TestBusSubscriberReadsAheadAfterFullBatch(t *testing.T) {
	srv := testredis.Start(t)
	for _, tc := range []struct {
		entries   int
		wantReads int64 // while the first message is not acked
	}{
		{entries: 40, wantReads: 2}, // full batches of 4: the next is read ahead
		{entries: 3, wantReads: 1},  // a batch of 3: the next is read once it is acked
	} {
		t.Run(fmt.Sprint(tc.entries, "-entries"), func(t *testing.T) {
			stream := fmt.Sprint(srv.Prefix, ":ahead-", tc.entries)
			c := newClient(t, srv, nil)
			var reads xreadCounter
			c.AddHook(&reads)
			ids, _ := addEntries(t, c, stream, tc.entries)
			ch := subscribeBus(t, context.Background(), c, redisstore.BusSubscriberConfig{ReadCount: 4, BlockTime: 100 * time.Millisecond}, stream)
			first := next(t, ch)
			for deadline := time.Now().Add(5 * time.Second); reads.n.Load() < tc.wantReads; {
				if time.Now().After(deadline) {
					t.Fatalf("%d reads within 5s, want %d", reads.n.Load(), tc.wantReads)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // the subscription would read on if it could
			if n := reads.n.Load(); n != tc.wantReads {
				t.Fatalf("%d reads while the first message is not acked, want %d", n, tc.wantReads)
			}
			select {
			case m := <-ch:
				t.Fatalf("got %s before the first message was acked", m.UUID)
			default:
			}
			first.Ack()
			for i := 1; i < len(ids); i++ {
				m := next(t, ch)
				if got := m.Metadata.Get(pipeline.MetaSeq); got != ids[i] {
					t.Fatalf("message %d has seq %s, want %s", i, got, ids[i])
				}
				m.Ack()
			}
		})
	}
}

// TestBusSubscriberUndecodable: entries that cannot be decoded are
// delivered marked MetaUndecodable, with their seq, and the subscription
// goes on.
func TestBusSubscriberUndecodable(t *testing.T) {
	srv := testredis.Start(t)
	stream := srv.Prefix + ":undecodable"
	c := newClient(t, srv, nil)
	ctx := context.Background()
	add := func(values ...any) string {
		t.Helper()
		id, err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	good := func(text string) []any {
		return []any{redisstream.UUIDHeaderKey, uuid.NewString(), "payload", text, "metadata", ""}
	}
	entries := []struct {
		id, payload string
		undecodable bool
	}{
		{id: add(good("before")...), payload: "before"},
		{id: add("x", "y"), undecodable: true},
		{id: add(redisstream.UUIDHeaderKey, "u-1", "payload", "p", "metadata", "\xc1 not msgpack"), undecodable: true},
		{id: add(good("after")...), payload: "after"},
	}
	ch := subscribeBus(t, ctx, c, redisstore.BusSubscriberConfig{BlockTime: 100 * time.Millisecond}, stream)
	for i, e := range entries {
		m := next(t, ch)
		reason := m.Metadata.Get(redisstore.MetaUndecodable)
		if got := m.Metadata.Get(pipeline.MetaSeq); got != e.id || (reason != "") != e.undecodable {
			t.Fatalf("entry %d: got seq %s, undecodable %q; want seq %s, undecodable %v", i, got, reason, e.id, e.undecodable)
		}
		if !e.undecodable && string(m.Payload) != e.payload {
			t.Fatalf("entry %d: got payload %q, want %q", i, m.Payload, e.payload)
		}
		m.Ack()
	}
}

// TestBusSubscriberReadFailureCloses: a read that fails (the connection
// killed, no client retry) closes the subscription's channel after the
// messages read before.
func TestBusSubscriberReadFailureCloses(t *testing.T) {
	srv := testredis.Start(t)
	stream := srv.Prefix + ":failure"
	name := srv.Prefix + "-reader"
	c := newClient(t, srv, func(o *redis.UniversalOptions) { o.MaxRetries = -1; o.ClientName = name })
	ids, _ := addEntries(t, c, stream, 3)
	ch := subscribeBus(t, context.Background(), c, redisstore.BusSubscriberConfig{BlockTime: 10 * time.Second}, stream)
	for range ids {
		next(t, ch).Ack()
	}
	// The reader now blocks on its connection: kill it.
	admin := srv.Client()
	deadline := time.Now().Add(5 * time.Second)
	for killed := false; !killed; {
		if time.Now().After(deadline) {
			t.Fatal("no blocked reader connection found")
		}
		list, err := admin.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " cmd=xread") {
				id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
				if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantClosed(t, ch, 5*time.Second, "after its read failed (block time 10s)")
}

// wantClosed fails the test unless ch closes within d, without handing out
// anything more; when says what the channel should close after.
func wantClosed(t *testing.T, ch <-chan *message.Message, d time.Duration, when string) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("got %s %s, want the channel closed", m.UUID, when)
		}
	case <-time.After(d):
		t.Fatalf("channel still open %v %s", d, when)
	}
}

// TestBusSubscriberStops: cancelling a subscription closes its channel at
// once and gives its connection back within BlockTime; Close closes every
// subscription and returns once their goroutines have ended; a closed
// subscriber refuses to subscribe.
func TestBusSubscriberStops(t *testing.T) {
	srv := testredis.Start(t)
	const block = time.Second
	c := newClient(t, srv, nil)
	ids, _ := addEntries(t, c, srv.Prefix+":stops", 3)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: block}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	idle := func() bool { s := c.PoolStats(); return s.TotalConns == s.IdleConns }
	// awaitIdle waits until the client's connections are back in its pool,
	// failing two block times after start.
	awaitIdle := func(start time.Time) {
		t.Helper()
		for !idle() {
			if time.Since(start) > 2*block+time.Second {
				t.Fatalf("connection still in use %v after cancel: %+v", time.Since(start), c.PoolStats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, srv.Prefix+":stops")
	if err != nil {
		t.Fatal(err)
	}
	held := next(t, ch) // not acked: cancelling ends it
	cancel()
	select {
	case <-held.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("an unacked message's context is not cancelled with its subscription")
	}
	start := time.Now()
	for {
		m, ok := <-ch
		if !ok {
			break
		}
		m.Ack() // a message may have been handed out as ctx ended
	}
	if d := time.Since(start); d > block/2 {
		t.Fatalf("channel closed %v after cancel, want at once", d)
	}
	awaitIdle(start)

	// A subscription blocked in a read closes its channel at once too.
	ctx, cancel = context.WithCancel(context.Background())
	reading, err := sub.Subscribe(ctx, srv.Prefix+":nothing")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the read block
	cancel()
	start = time.Now()
	if _, ok := <-reading; ok {
		t.Fatal("got a message from an empty stream")
	}
	if d := time.Since(start); d > block/2 {
		t.Fatalf("channel closed %v after cancel during a read, want at once", d)
	}
	awaitIdle(start)

	// Close: two subscriptions, one blocked in a read, one waiting for an
	// ack.
	blocked, err := sub.Subscribe(context.Background(), srv.Prefix+":empty")
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := sub.Subscribe(context.Background(), srv.Prefix+":stops")
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, waiting); m.Metadata.Get(pipeline.MetaSeq) != ids[0] {
		t.Fatalf("got seq %s, want %s", m.Metadata.Get(pipeline.MetaSeq), ids[0])
	}
	time.Sleep(50 * time.Millisecond) // let the first read block
	start = time.Now()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > block+time.Second {
		t.Fatalf("Close took %v, want at most the block time %v and a little", d, block)
	}
	for _, ch := range []<-chan *message.Message{blocked, waiting} {
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("got a message after Close, want the channel closed")
			}
		default:
			t.Fatal("channel open after Close returned")
		}
	}
	if !idle() {
		t.Fatalf("connection in use after Close: %+v", c.PoolStats())
	}
	if _, err := sub.Subscribe(context.Background(), srv.Prefix+":stops"); !errors.Is(err, redisstore.ErrSubscriberClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrSubscriberClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestBusSubscriberConfig: NewBusSubscriber fills in defaults and refuses
// configurations that cannot work.
func TestBusSubscriberConfig(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = c.Close() })
	cases := []struct {
		name    string
		cfg     redisstore.BusSubscriberConfig
		wantErr string // "" valid
	}{
		{name: "defaults", cfg: redisstore.BusSubscriberConfig{}},
		{name: "full ID", cfg: redisstore.BusSubscriberConfig{After: "1700000000000-3"}},
		{name: "millisecond ID", cfg: redisstore.BusSubscriberConfig{After: "1700000000000"}},
		{name: "dollar", cfg: redisstore.BusSubscriberConfig{After: "$"}, wantErr: "not a stream entry ID"},
		{name: "half ID", cfg: redisstore.BusSubscriberConfig{After: "17-"}, wantErr: "not a stream entry ID"},
		{name: "negative count", cfg: redisstore.BusSubscriberConfig{ReadCount: -1}, wantErr: "read count"},
		{name: "sub-millisecond block", cfg: redisstore.BusSubscriberConfig{BlockTime: time.Microsecond}, wantErr: "block time"},
		{name: "negative nack delay", cfg: redisstore.BusSubscriberConfig{NackResendDelay: -time.Second}, wantErr: "nack resend delay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := redisstore.NewBusSubscriber(tc.cfg, c, nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error about %q", err, tc.wantErr)
			}
			if sub != nil {
				_ = sub.Close() // nothing subscribed
			}
		})
	}
	if _, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{}, nil, nil); err == nil {
		t.Fatal("no client: got no error")
	}
}

// TestBusSubscriberCloseClosesChannels: once Close returns, the channel of a
// subscription that waits for an ack is closed, every time.
func TestBusSubscriberCloseClosesChannels(t *testing.T) {
	srv := testredis.Start(t)
	stream := srv.Prefix + ":close"
	c := newClient(t, srv, nil)
	addEntries(t, c, stream, 1)
	for round := range 200 {
		sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: 100 * time.Millisecond}, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		next(t, ch) // not acked
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatalf("round %d: got a message after Close", round)
			}
		default:
			t.Fatalf("round %d: channel open after Close returned", round)
		}
	}
}

// subscribeBus subscribes to stream with a new subscriber of cfg on c,
// closed when the test ends.
func subscribeBus(t *testing.T, ctx context.Context, c redis.UniversalClient, cfg redisstore.BusSubscriberConfig, stream string) <-chan *message.Message {
	t.Helper()
	sub, err := redisstore.NewBusSubscriber(cfg, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ch, err := sub.Subscribe(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
