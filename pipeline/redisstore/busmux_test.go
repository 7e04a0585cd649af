package redisstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// xreadStreams is a go-redis hook recording, for each XREAD reply, how many
// streams it carried entries of.
type xreadStreams struct {
	mu      sync.Mutex
	replies []int
}

func (h *xreadStreams) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *xreadStreams) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
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

// TestBusMuxReadsStreamsTogether: a multiplexing subscriber reads the
// streams of all its subscriptions with one XREAD: entries added to eight
// streams at once reach all eight subscriptions in at most two replies
// (one subscriber per stream needs eight). Redis 7.0 answers a blocked
// XREAD with the entries of the stream that woke it; the next XREAD, which
// does not block, then takes the seven others. Later versions answer with
// all eight at once.
func TestBusMuxReadsStreamsTogether(t *testing.T) {
	srv := testredis.Start(t)
	c := newClient(t, srv, nil)
	var replies xreadStreams
	c.AddHook(&replies)
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
	time.Sleep(200 * time.Millisecond) // let the read of all eight block
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
	c := newClient(t, srv, nil)
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{ReadCount: 1, BlockTime: 10 * time.Second, Multiplex: true}, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Subscribe(context.Background(), srv.Prefix+":idle"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the read block
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
	c := newClient(t, srv, func(o *redis.UniversalOptions) { o.Username, o.Password = user, "pw" })
	logs := watermill.NewCaptureLogger()
	const block = 500 * time.Millisecond
	sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{BlockTime: block, Multiplex: true}, c, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Subscribe(ctx, srv.Prefix+":idle"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		time.Sleep(100 * time.Millisecond) // let the read block
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
