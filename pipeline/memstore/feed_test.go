package memstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// wait bounds every wait for something the tests expect to happen.
const wait = 5 * time.Second

// eventually polls cond until it holds, failing t when it does not within
// wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(time.Millisecond)
	}
}

// lostAfter reports whether st reports entries after pos lost to trimming,
// as a pipeline.Delivery decides it.
func lostAfter(st pipeline.BusState, pos string) bool {
	if st.Trimmed != "" {
		return pipeline.CompareSeq(st.Trimmed, pos) > 0
	}
	return st.Oldest != "" && pipeline.CompareSeq(pos, st.Oldest) < 0
}

// TestFeedTrimsOnlyPublished proves that the feed does not report trimmed
// the messages a subscription has not read yet, however far they exceed
// RoomMaxLen, and that once they are published with nobody reading (the
// subscription gone) it trims them and reports it, so a reader at the old
// position learns of its gap.
func TestFeedTrimsOnlyPublished(t *testing.T) {
	const maxLen, n = 2, 20
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen, FeedQueue: n})
	ctx := context.Background()
	subCtx, unsubscribe := context.WithCancel(ctx)
	defer unsubscribe()
	sub, err := b.Subscribe(subCtx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	first := appendTo(t, b, "lobby", "first").Seq
	select {
	case m := <-sub:
		m.Ack()
		if got := m.Metadata.Get(pipeline.MetaSeq); got != first {
			t.Fatalf("read %s, want %s", got, first)
		}
	case <-time.After(wait):
		t.Fatalf("nothing on the feed within %v", wait)
	}
	// The subscription is at first; n messages wait for it.
	var seqs []string
	for i := range n {
		seqs = append(seqs, appendTo(t, b, "lobby", fmt.Sprint("m", i)).Seq)
	}
	st, err := b.BusState(ctx, 0)
	if err != nil || lostAfter(st, first) {
		t.Fatalf("BusState() = %+v, %v with %d messages not yet read after %s; want none reported trimmed", st, err, n, first)
	}
	if lags, err := b.BusLags(ctx, []string{first}, 2*n); err != nil || lags[0] != n {
		t.Errorf("BusLags(%s) = %v, %v; want %d", first, lags, err, n)
	}

	// The subscription goes: the feed publishes to nobody and trims to the
	// last maxLen, and a reader still at first is told it lost some.
	unsubscribe()
	for range sub { // the ended subscription acks what it holds and closes
	}
	eventually(t, "the feed trimmed past "+first, func() bool {
		st, err = b.BusState(ctx, 0)
		return err == nil && lostAfter(st, first)
	})
	if pipeline.CompareSeq(st.Trimmed, seqs[n-maxLen-1]) > 0 || pipeline.CompareSeq(st.Oldest, st.Trimmed) <= 0 {
		t.Errorf("BusState() = %+v; want the last %d published kept (trimmed at most %s)", st, maxLen, seqs[n-maxLen-1])
	}
}

// heldDeliverer counts deliveries and resyncs; the delivery of the message
// with the text "hold" waits until hold is closed, like an instance that
// falls behind under load.
type heldDeliverer struct {
	hold               chan struct{}
	delivered, resyncs atomic.Int64
}

func (d *heldDeliverer) Deliver(m pipeline.Message) {
	if m.Text == "hold" {
		<-d.hold
	}
	d.delivered.Add(1)
}

func (d *heldDeliverer) Resync(func(room string) bool) int {
	d.resyncs.Add(1)
	return 1
}

// countingBuses counts the BusState calls of a delivery's gap checks.
type countingBuses struct {
	pipeline.BusStater
	calls atomic.Int64
}

func (c *countingBuses) BusState(ctx context.Context, p int) (pipeline.BusState, error) {
	c.calls.Add(1)
	return c.BusStater.BusState(ctx, p)
}

// TestDeliveryBehindNoResync proves that a pipeline.Delivery checking the
// memory feed for gaps resyncs nobody when it falls far behind (thousands
// of messages queued, many times RoomMaxLen) but loses nothing, and
// delivers every message.
func TestDeliveryBehindNoResync(t *testing.T) {
	const maxLen, n = 500, 3000 // as --room-maxlen 500 under a burst
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen})
	del := &heldDeliverer{hold: make(chan struct{})}
	buses := &countingBuses{BusStater: b}
	d, err := pipeline.NewDelivery(pipeline.DeliveryConfig{
		Feed: b, Deliverer: del, Buses: buses, ReportEvery: time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var release bool
	t.Cleanup(func() {
		if !release {
			close(del.hold)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return within %v of cancel", wait)
		}
	})
	select {
	case <-d.Running():
	case <-time.After(wait):
		t.Fatalf("delivery not running after %v", wait)
	}

	first := appendTo(t, b, "r0", "first").Seq
	eventually(t, "delivery at the first seq", func() bool { return d.Positions()[0] == first })
	appendTo(t, b, "r1", "hold")
	for i := range n - 2 {
		appendTo(t, b, fmt.Sprint("r", i%50), fmt.Sprint("m", i))
	}
	// Two gap checks while the delivery is n-1 messages behind.
	checks := buses.calls.Load()
	eventually(t, "gap checks while behind", func() bool { return buses.calls.Load() >= checks+2 })
	release = true
	close(del.hold)
	eventually(t, fmt.Sprint(n, " messages delivered"), func() bool { return del.delivered.Load() == n })
	checks = buses.calls.Load()
	eventually(t, "gap checks after catching up", func() bool { return buses.calls.Load() >= checks+2 })
	if r := del.resyncs.Load(); r != 0 {
		t.Fatalf("%d resyncs of a delivery that delivered all %d messages, want none", r, n)
	}
}

// TestFeedLogBytes: the feed's replay log keeps its published messages
// within about twice FeedLogBytes, however many RoomMaxLen allows, and
// counts its bytes exactly; what it dropped is reported trimmed. Messages
// not yet published neither go nor count against it: behind a subscriber
// that does not read, the published ones are still kept.
func TestFeedLogBytes(t *testing.T) {
	const logBytes, n, queued = 64 << 10, 400, 60
	b := newBackend(t, memstore.Config{RoomMaxLen: 1000, FeedLogBytes: logBytes, FeedQueue: 1000})
	ctx := context.Background()
	text := strings.Repeat("x", 4000)
	var seqs []string
	for range n {
		seqs = append(seqs, appendTo(t, b, "lobby", text).Seq)
	}
	size := int64(memstore.DeadLetterSize(message.NewMessage("id", []byte(text)))) // without metadata: a lower bound
	within := func(published int, bytes int64) bool {
		return int64(published) <= 2*logBytes/size+1 && bytes <= 2*logBytes+size+1024
	}
	eventually(t, "every message published, and the feed log within twice its bytes", func() bool {
		published, bytes, unpublished, err := b.FeedLog()
		if err != nil {
			t.Fatal(err)
		}
		return unpublished == 0 && within(published, bytes)
	})
	st, err := b.BusState(ctx, 0)
	if err != nil || !lostAfter(st, seqs[0]) || st.Last != seqs[n-1] {
		t.Fatalf("BusState() = %+v, %v; want the oldest messages reported trimmed and %s the newest", st, err, seqs[n-1])
	}
	if _, _, err := b.Bytes(); err != nil {
		t.Fatal(err)
	}

	// A subscriber that reads nothing holds the feed: what follows stays
	// unpublished, several times FeedLogBytes of it.
	subCtx, unsubscribe := context.WithCancel(ctx)
	defer unsubscribe()
	if _, err := b.Subscribe(subCtx, 0, ""); err != nil {
		t.Fatal(err)
	}
	for range queued {
		appendTo(t, b, "lobby", text)
	}
	published, bytes, unpublished, err := b.FeedLog()
	if err != nil {
		t.Fatal(err)
	}
	if unpublished < queued-1 || int64(published) < logBytes/(2*size) || !within(published, bytes) {
		t.Fatalf("behind a subscriber that reads nothing: %d published messages (%d bytes) and %d unpublished; want all %d but one unpublished, and the published ones within the budget, not dropped for them",
			published, bytes, unpublished, queued)
	}
}
