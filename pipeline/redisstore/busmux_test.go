package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// xreadStreams is a go-redis hook recording how many streams the last
// XREAD sent asked for, and for each XREAD reply how many streams it
// carried entries of.
type xreadStreams struct {
	asked   atomic.Int64
	mu      sync.Mutex
	replies []int
}

func (h *xreadStreams) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *xreadStreams) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xread" {
			args := cmd.Args()
			for i, a := range args {
				if a == "streams" {
					h.asked.Store(int64(len(args)-i-1) / 2)
				}
			}
		}
		err := next(ctx, cmd)
		if x, ok := cmd.(*redis.XStreamSliceCmd); ok && cmd.Name() == "xread" && err == nil {
			h.mu.Lock()
			h.replies = append(h.replies, len(x.Val()))
			h.mu.Unlock()
		}
		return err
	}
}

func (h *xreadStreams) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// counts returns the number of streams in each reply so far.
func (h *xreadStreams) counts() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.replies...)
}

// awaitBlockedRead waits until the XREAD of the client named name blocks
// in the server, asking for the given number of streams (as h saw it).
func awaitBlockedRead(t *testing.T, srv *testredis.Server, name string, h *xreadStreams, streams int) {
	t.Helper()
	blockedRead(t, srv, name, h, streams, func(string) {})
}

// killBlockedRead waits like awaitBlockedRead, then kills the blocked
// read's connection.
func killBlockedRead(t *testing.T, srv *testredis.Server, name string, h *xreadStreams, streams int) {
	t.Helper()
	blockedRead(t, srv, name, h, streams, func(id string) {
		if err := srv.Client().Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// blockedRead waits until the XREAD of the client named name blocks in the
// server, asking for the given number of streams, and calls found with
// its connection's CLIENT ID.
func blockedRead(t *testing.T, srv *testredis.Server, name string, h *xreadStreams, streams int, found func(id string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		list, err := srv.Client().ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " flags=b ") &&
				h.asked.Load() == int64(streams) {
				found(strings.TrimPrefix(strings.Fields(line)[0], "id="))
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read of %d streams blocked within 5s (the last asked for %d)", streams, h.asked.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// muxClient returns a client of srv named after the test, with h added,
// that does not retry a failed command.
func muxClient(t *testing.T, srv *testredis.Server, h *xreadStreams, opts func(*redis.UniversalOptions)) (redis.UniversalClient, string) {
	t.Helper()
	name := strings.ReplaceAll(srv.Prefix, ":", "-") + "-mux"
	c := newClient(t, srv, func(o *redis.UniversalOptions) {
		o.ClientName, o.MaxRetries = name, -1
		if opts != nil {
			opts(o)
		}
	})
	c.AddHook(h)
	return c, name
}

// TestBusMuxReadsStreamsTogether: a multiplexing subscriber reads the
// streams of all its subscriptions with one XREAD: entries added to eight
// streams at once reach all eight subscriptions in at most two replies
// (one subscriber per stream needs eight). Redis 7.0 answers a blocked
// XREAD with the entries of the stream that woke it; the next XREAD, which
// does not block, then takes the seven others. Later versions answer with
// all eight at once.
func TestBusMuxReadsStreamsTogether(t *testing.T) {
	srv := testredis.Start(t)
	var replies xreadStreams
	c, name := muxClient(t, srv, &replies, nil)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	const n = 8
	var streams []string
	var chans []<-chan *message.Message
	for i := range n {
		stream := fmt.Sprintf("%s:together-%d", srv.Prefix, i)
		ch, err := sub.Subscribe(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		streams, chans = append(streams, stream), append(chans, ch)
	}
	awaitBlockedRead(t, srv, name, &replies, n)
	// One transaction: the blocked read is served once it has run.
	pipe := c.TxPipeline()
	for i, stream := range streams {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{
			"_watermill_message_uuid", fmt.Sprint("m", i), "payload", "p", "metadata", "",
		}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		m := next(t, ch)
		if want := fmt.Sprint("m", i); m.UUID != want {
			t.Fatalf("stream %d: got %s, want %s", i, m.UUID, want)
		}
		m.Ack()
	}
	counts := replies.counts()
	if len(counts) > 2 {
		t.Fatalf("%d XREAD replies carried the entries of %d streams (streams in each: %v), want at most 2", len(counts), n, counts)
	}
}

// TestBusMuxWakes: while the reader blocks (for up to 10s), a new
// subscription is read at once, and so is one that was left out of the
// read for want of room as soon as it has room again (ReadCount 1: it
// holds two entries, then waits until its goroutine takes the second).
func TestBusMuxWakes(t *testing.T) {
	srv := testredis.Start(t)
	var reads xreadStreams
	c, name := muxClient(t, srv, &reads, nil)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{ReadCount: 1, BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Subscribe(context.Background(), srv.Prefix+":idle"); err != nil {
		t.Fatal(err)
	}
	awaitBlockedRead(t, srv, name, &reads, 1)
	late := srv.Prefix + ":late"
	ids, _ := addEntries(t, c, late, 5)
	ch, err := sub.Subscribe(context.Background(), late)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids { // next fails after 5s, half the block time
		m := next(t, ch)
		if got := m.Metadata.Get(pipeline.MetaSeq); got != id {
			t.Fatalf("message %d: seq %s, want %s", i, got, id)
		}
		m.Ack()
	}
}

// subscribeWhileBlocked subscribes to an idle stream, then three times
// waits until the reader of sub (its client c named name, h added) blocks,
// and subscribes to a new stream holding one entry, which must arrive.
func subscribeWhileBlocked(t *testing.T, srv *testredis.Server, sub *redisstore.BusSubscriber, c redis.UniversalClient, name string, h *xreadStreams) {
	t.Helper()
	ctx := context.Background()
	if _, err := sub.Subscribe(ctx, srv.Prefix+":idle"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		awaitBlockedRead(t, srv, name, h, 1+i) // the idle stream and the earlier ones
		stream := fmt.Sprintf("%s:late-%d", srv.Prefix, i)
		ids, _ := addEntries(t, c, stream, 1)
		ch, err := sub.Subscribe(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		m := next(t, ch)
		if got := m.Metadata.Get(pipeline.MetaSeq); got != ids[0] {
			t.Fatalf("stream %d: seq %s, want %s", i, got, ids[0])
		}
		m.Ack()
	}
}

// TestBusMuxWithoutUnblock: when the server refuses CLIENT UNBLOCK (an ACL
// without it), a new subscription is still read, within the block time,
// and the refusal is logged once.
func TestBusMuxWithoutUnblock(t *testing.T) {
	srv := testredis.Start(t)
	admin := srv.Client()
	user := strings.ReplaceAll(srv.Prefix, ":", "-") + "-nounblock"
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">pw", "~*", "&*", "+@all", "-client|unblock").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	var reads xreadStreams
	c, name := muxClient(t, srv, &reads, func(o *redis.UniversalOptions) { o.Username, o.Password = user, "pw" })
	logs := watermill.NewCaptureLogger()
	const block = 500 * time.Millisecond
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: block, Multiplex: true}, c, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	subscribeWhileBlocked(t, srv, sub, c, name, &reads)
	var refusals int
	for _, e := range logs.Captured()[watermill.ErrorLogLevel] {
		if strings.Contains(e.Msg, "CLIENT UNBLOCK") {
			refusals++
		}
	}
	if refusals != 1 {
		logs.PrintCaptured(t)
		t.Fatalf("%d errors about CLIENT UNBLOCK, want 1", refusals)
	}
}

// TestBusMuxNeedsOneServer: a Cluster client cannot multiplex.
func TestBusMuxNeedsOneServer(t *testing.T) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}) // never dialled
	t.Cleanup(func() { _ = c.Close() })
	_, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{Multiplex: true}, c, nil)
	if err == nil || !strings.Contains(err.Error(), "one Redis server") {
		t.Fatalf("got %v, want an error about one Redis server", err)
	}
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{}, c, nil)
	if err != nil {
		t.Fatalf("without multiplexing: %v", err)
	}
	_ = sub.Close()
}

// TestBusMuxSharesAStream: two subscriptions of one stream, one at its end
// and one behind, each get every entry after its own position, promptly
// (the block time is 10s; next fails after 5s).
func TestBusMuxSharesAStream(t *testing.T) {
	srv := testredis.Start(t)
	c := newClient(t, srv, nil)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{ReadCount: 1, BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	stream := srv.Prefix + ":shared"
	ids, _ := addEntries(t, c, stream, 3)
	ctx := context.Background()
	ahead, err := sub.SubscribeAfter(ctx, stream, ids[2])
	if err != nil {
		t.Fatal(err)
	}
	behind, err := sub.SubscribeAfter(ctx, stream, "0-0")
	if err != nil {
		t.Fatal(err)
	}
	expect := func(ch <-chan *message.Message, id string) {
		t.Helper()
		m := next(t, ch)
		if got := m.Metadata.Get(pipeline.MetaSeq); got != id {
			t.Fatalf("got seq %s, want %s", got, id)
		}
		m.Ack()
	}
	for _, id := range ids {
		expect(behind, id)
	}
	more, _ := addEntries(t, c, stream, 1)
	expect(ahead, more[0])
	expect(behind, more[0])
	select {
	case m := <-ahead:
		t.Fatalf("the subscription ahead got %s twice", m.Metadata.Get(pipeline.MetaSeq))
	case <-time.After(100 * time.Millisecond):
	}
}

// TestBusMuxReadFailureHandsOutWhatWasRead: when the reader's read fails,
// every subscription hands out the entries it holds (one being handed
// out, one queued), then closes its channel, and so does one that holds
// none.
func TestBusMuxReadFailureHandsOutWhatWasRead(t *testing.T) {
	srv := testredis.Start(t)
	var reads xreadStreams
	c, name := muxClient(t, srv, &reads, nil)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{ReadCount: 1, BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	ctx := context.Background()
	idle, err := sub.Subscribe(ctx, srv.Prefix+":idle")
	if err != nil {
		t.Fatal(err)
	}
	var ids [2][]string
	var chans [2]<-chan *message.Message
	for i := range 2 {
		stream := fmt.Sprintf("%s:held-%d", srv.Prefix, i)
		ids[i], _ = addEntries(t, c, stream, 3)
		if chans[i], err = sub.Subscribe(ctx, stream); err != nil {
			t.Fatal(err)
		}
	}
	first := [2]*message.Message{next(t, chans[0]), next(t, chans[1])} // not acked
	// Both hold their second entry queued, so only the idle stream is
	// read: kill that read's connection.
	killBlockedRead(t, srv, name, &reads, 1)
	closed := func(ch <-chan *message.Message, what string) {
		t.Helper()
		select {
		case m, ok := <-ch:
			if ok {
				t.Fatalf("%s: got %s after the read failed, want the channel closed", what, m.Metadata.Get(pipeline.MetaSeq))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: channel open 5s after the read failed (block time 10s)", what)
		}
	}
	closed(idle, "idle subscription")
	for i := range 2 {
		if got := first[i].Metadata.Get(pipeline.MetaSeq); got != ids[i][0] {
			t.Fatalf("stream %d: first seq %s, want %s", i, got, ids[i][0])
		}
		first[i].Ack()
		m := next(t, chans[i])
		if got := m.Metadata.Get(pipeline.MetaSeq); got != ids[i][1] {
			t.Fatalf("stream %d: queued seq %s, want %s", i, got, ids[i][1])
		}
		m.Ack()
		closed(chans[i], fmt.Sprint("stream ", i))
	}
}

// failFirstUnblock is a go-redis hook that fails the first CLIENT UNBLOCK
// without sending it, as a broken connection would.
type failFirstUnblock struct{ failed atomic.Bool }

func (h *failFirstUnblock) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failFirstUnblock) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 1 && args[0] == "client" && args[1] == "unblock" && h.failed.CompareAndSwap(false, true) {
			err := errors.New("i/o timeout (injected)")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *failFirstUnblock) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestBusMuxUnblockFailureIsNotFinal: a CLIENT UNBLOCK that fails for
// another reason than permission is tried again, and later wake-ups still
// end the blocked read (the block time is 10s; next fails after 5s).
func TestBusMuxUnblockFailureIsNotFinal(t *testing.T) {
	srv := testredis.Start(t)
	var reads xreadStreams
	c, name := muxClient(t, srv, &reads, nil)
	var fail failFirstUnblock
	c.AddHook(&fail)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	subscribeWhileBlocked(t, srv, sub, c, name, &reads)
	if !fail.failed.Load() {
		t.Fatal("no CLIENT UNBLOCK was sent")
	}
}
