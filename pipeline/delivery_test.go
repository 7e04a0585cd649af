package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// eventually polls cond until it holds, failing t when it does not within
// wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// quietFor fails t when ch yields anything within d.
func quietFor[T any](t *testing.T, what string, ch <-chan T, d time.Duration) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %+v", what, v)
	case <-time.After(d):
	}
}

// runDelivery runs a Delivery alone and waits until it follows every
// partition. It is stopped by t.Cleanup, which checks that Run returned nil.
func runDelivery(t *testing.T, cfg pipeline.DeliveryConfig) *pipeline.Delivery {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	d, err := pipeline.NewDelivery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
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
	return d
}

// instance returns the record of instance id in be, and whether there is one.
func instance(t *testing.T, be *memstore.Backend, id string) (pipeline.InstanceInfo, bool) {
	t.Helper()
	infos, err := be.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		if info.ID == id {
			return info, true
		}
	}
	return pipeline.InstanceInfo{}, false
}

// lateFeed is the memory backend's feed whose Subscribe fails until open is
// closed, like a backend that cannot be reached yet.
type lateFeed struct {
	be       *memstore.Backend
	open     chan struct{}
	attempts atomic.Int64
}

var _ pipeline.Feed = (*lateFeed)(nil)

func (f *lateFeed) Partitions() int { return f.be.Partitions() }

func (f *lateFeed) Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error) {
	f.attempts.Add(1)
	select {
	case <-f.open:
		return f.be.Subscribe(ctx, p, after)
	default:
		return nil, fmt.Errorf("late feed: %w", pipeline.ErrUnavailable)
	}
}

// TestSubmitWaitsForDelivery proves that a Pipeline's Submit neither stores
// nor returns while its Delivery cannot subscribe to the feed (which it
// retries), and that a submission held that way is stored and delivered
// here once the delivery follows every partition.
func TestSubmitWaitsForDelivery(t *testing.T) {
	f := newFixture(t, roomMaxLen)
	feed := &lateFeed{be: f.be, open: make(chan struct{})}
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{Feed: feed, ResubscribeDelay: 5 * time.Millisecond}})
	select {
	case <-f.p.Running():
		t.Fatal("pipeline runs before its delivery subscribed")
	case <-time.After(100 * time.Millisecond):
	}
	if n := feed.attempts.Load(); n < 2 {
		t.Errorf("%d subscribe attempts in 100ms, want the failed subscription retried", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if o, err := f.p.Submit(ctx, send("early", "e")); !errors.Is(err, context.DeadlineExceeded) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit before delivery subscribed = %+v, %v; want no outcome and context.DeadlineExceeded", o, err)
	}
	type result struct {
		o   pipeline.Outcome
		err error
	}
	held := send("held", "h")
	res := make(chan result, 1)
	go func() {
		o, err := f.p.Submit(context.Background(), held)
		res <- result{o, err}
	}()
	quietFor(t, "Submit returned before delivery subscribed", res, 100*time.Millisecond)
	if h := f.history(t, "lobby"); len(h) != 0 {
		t.Fatalf("history = %+v before delivery subscribed, want nothing stored", h)
	}
	if s := f.p.Stats(); s.Stored != 0 || s.Refused != 0 {
		t.Fatalf("stats = %+v before delivery subscribed, want nothing handled", s)
	}

	close(feed.open)
	f.waitRunning(t)
	var o pipeline.Outcome
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("held Submit = %v", r.err)
		}
		o = r.o
	case <-time.After(wait):
		t.Fatalf("held Submit did not return within %v of the feed opening", wait)
	}
	if err := f.checkOutcome(held, o); err != nil || o.Err != nil {
		t.Fatalf("held Submit = %+v (err %+v), %v; want its acknowledgement", o, o.Err, err)
	}
	if m := f.nextDelivery(t); m.ID != o.ID {
		t.Fatalf("delivered %+v, want the held message %s", m, o.ID)
	}
}

// TestDeliveryRecordsInstance proves that a pipeline's Delivery records its
// instance every ReportEvery through the InstanceRecorder, with one position
// per partition that follows what it delivered.
func TestDeliveryRecordsInstance(t *testing.T) {
	f := newFixture(t, roomMaxLen)
	info := pipeline.InstanceInfo{ID: "inst-1", Addr: "10.0.0.1:8080", StartedAt: time.Now().UTC().Truncate(time.Millisecond)}
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{Instances: f.be, Instance: info, ReportEvery: 10 * time.Millisecond}})
	f.waitRunning(t)
	var rec pipeline.InstanceInfo
	eventually(t, "instance recorded", func() bool {
		var ok bool
		rec, ok = instance(t, f.be, info.ID)
		return ok
	})
	if rec.Addr != info.Addr || !rec.StartedAt.Equal(info.StartedAt) {
		t.Fatalf("record = %+v, want %+v", rec, info)
	}
	if !slices.Equal(rec.Positions, []string{""}) {
		t.Fatalf("record positions = %q before any delivery, want one empty position per partition", rec.Positions)
	}

	o := f.submit(t, send("hello", "r1"))
	if m := f.nextDelivery(t); m.ID != o.ID {
		t.Fatalf("delivered %s, want %s", m.ID, o.ID)
	}
	want := []string{o.Seq}
	eventually(t, fmt.Sprint("recorded positions ", want), func() bool {
		rec, _ = instance(t, f.be, info.ID)
		return slices.Equal(rec.Positions, want)
	})
	if got := f.p.Positions(); !slices.Equal(got, want) {
		t.Fatalf("Positions() = %q, want %q", got, want)
	}
	if rec.Addr != info.Addr || !rec.StartedAt.Equal(info.StartedAt) {
		t.Fatalf("refreshed record = %+v, want %+v", rec, info)
	}
}

// TestDeliveryFollowsAnotherIngest proves that a Delivery alone delivers
// what an Ingest alone (another process, e.g. a publisher) stored on the
// same backend, and records its own position for it.
func TestDeliveryFollowsAnotherIngest(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be})
	got := &deliveries{ch: make(chan pipeline.Message, 16)}
	d := runDelivery(t, pipeline.DeliveryConfig{
		Feed: be, Deliverer: got, Instances: be, Instance: pipeline.InstanceInfo{ID: "follower"}, ReportEvery: 10 * time.Millisecond,
	})
	o := submitTo(t, in, send("from the publisher", "p1"))
	if o.Err != nil {
		t.Fatalf("outcome error: %+v", o.Err)
	}
	select {
	case m := <-got.ch:
		if m.ID != o.ID || m.Seq != o.Seq || m.Text != "from the publisher" {
			t.Fatalf("delivered %+v, want the message of %+v", m, o)
		}
	case <-time.After(wait):
		t.Fatalf("nothing delivered within %v", wait)
	}
	want := []string{o.Seq}
	eventually(t, fmt.Sprint("Positions() ", want), func() bool { return slices.Equal(d.Positions(), want) })
	eventually(t, fmt.Sprint("recorded positions ", want), func() bool {
		rec, _ := instance(t, be, "follower")
		return slices.Equal(rec.Positions, want)
	})
	if n := got.resyncs.Load(); n != 0 || got.dropped.Load() != 0 {
		t.Fatalf("%d resyncs and %d drops, want none", n, got.dropped.Load())
	}
}

// cutFeed is the memory backend's feed whose first subscription ends after
// one message, or, with kill, when kill is closed, like a connection that
// drops. It records the seq every subscription starts after.
type cutFeed struct {
	be   *memstore.Backend
	kill chan struct{}
	// mu guards afters.
	mu     sync.Mutex
	afters []string
}

var _ pipeline.Feed = (*cutFeed)(nil)

func (f *cutFeed) Partitions() int { return f.be.Partitions() }

func (f *cutFeed) Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error) {
	f.mu.Lock()
	f.afters = append(f.afters, after)
	first := len(f.afters) == 1
	f.mu.Unlock()
	if !first {
		return f.be.Subscribe(ctx, p, after)
	}
	sctx, cancel := context.WithCancel(ctx)
	in, err := f.be.Subscribe(sctx, p, after)
	if err != nil {
		cancel()
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		defer cancel() // ends the backend's subscription, which acks what it still holds
		select {
		case m, ok := <-in:
			if !ok {
				return
			}
			select {
			case out <- m:
			case <-ctx.Done():
				m.Ack()
			}
		case <-f.kill: // nil without kill
		case <-ctx.Done():
		}
	}()
	return out, nil
}

func (f *cutFeed) subscribedAfter() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.afters)
}

// TestDeliveryResubscribesAfterLastSeq proves that when a feed subscription
// ends, the Delivery subscribes again after the last seq it delivered, so
// the messages stored in between are delivered once each, in order.
func TestDeliveryResubscribesAfterLastSeq(t *testing.T) {
	f := newFixture(t, roomMaxLen)
	feed := &cutFeed{be: f.be}
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{Feed: feed, ResubscribeDelay: 100 * time.Millisecond}})
	f.waitRunning(t)
	o1 := f.submit(t, send("one", "1"))
	if m := f.nextDelivery(t); m.ID != o1.ID {
		t.Fatalf("delivered %s, want %s", m.ID, o1.ID)
	}
	// Stored while the first subscription is gone.
	o2 := f.submit(t, send("two", "2"))
	o3 := f.submit(t, send("three", "3"))
	for _, o := range []pipeline.Outcome{o2, o3} {
		if m := f.nextDelivery(t); m.ID != o.ID || m.Seq != o.Seq {
			t.Fatalf("delivered %s (seq %s), want %s (seq %s)", m.ID, m.Seq, o.ID, o.Seq)
		}
	}
	quietFor(t, "delivered again", f.deliveries.ch, 150*time.Millisecond)
	if got, want := feed.subscribedAfter(), []string{"", o1.Seq}; !slices.Equal(got, want) {
		t.Fatalf("subscribed after %q, want %q", got, want)
	}
	eventually(t, "Positions() at the last seq", func() bool { return slices.Equal(f.p.Positions(), []string{o3.Seq}) })
}

// TestDeliveryResubscribesFromItsStart: a subscription "from now on" that
// ends before it delivered anything resumes from where it started (the
// partition's newest seq then; 0-0 for an empty one), not from a later
// now, so a message stored while it resubscribes is delivered.
func TestDeliveryResubscribesFromItsStart(t *testing.T) {
	f := newFixture(t, roomMaxLen)
	feed := &cutFeed{be: f.be, kill: make(chan struct{})}
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{Feed: feed, Buses: f.be, ResubscribeDelay: 300 * time.Millisecond}})
	f.waitRunning(t)
	close(feed.kill)
	time.Sleep(50 * time.Millisecond) // the subscription is gone; its successor waits
	o := f.submit(t, send("stored while resubscribing", "1"))
	if m := f.nextDelivery(t); m.ID != o.ID {
		t.Fatalf("delivered %s, want %s", m.ID, o.ID)
	}
	if got, want := feed.subscribedAfter(), []string{"0-0", "0-0"}; !slices.Equal(got, want) {
		t.Fatalf("subscribed after %q, want %q", got, want)
	}
}

// resyncRecorder is a pipeline.Deliverer that queues every delivered
// message and every Resync's match function.
type resyncRecorder struct {
	delivered chan pipeline.Message
	resyncs   chan func(room string) bool
}

func (d *resyncRecorder) Deliver(m pipeline.Message) { d.delivered <- m }

func (d *resyncRecorder) Resync(match func(room string) bool) int {
	d.resyncs <- match
	return 1
}

// gatedFeed is a feed whose subscriptions after the first fail until open
// is closed, like a backend that cannot be reached again at once.
type gatedFeed struct {
	pipeline.Feed
	open  chan struct{}
	calls atomic.Int64
}

func (f *gatedFeed) Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error) {
	if f.calls.Add(1) > 1 {
		select {
		case <-f.open:
		default:
			return nil, fmt.Errorf("gated feed: %w", pipeline.ErrUnavailable)
		}
	}
	return f.Feed.Subscribe(ctx, p, after)
}

// TestDeliveryGapResyncs proves that when the feed was trimmed past the
// position a Delivery has read (its subscription was gone while the feed
// went on and trimmed), its members resync once, and that delivery then
// goes on in order with what the feed kept.
func TestDeliveryGapResyncs(t *testing.T) {
	const maxLen = 2 // the memory feed keeps 2 to 4 published messages
	f := newFixture(t, maxLen)
	del := &resyncRecorder{delivered: make(chan pipeline.Message, 16), resyncs: make(chan func(string) bool, 16)}
	feed := &gatedFeed{Feed: &cutFeed{be: f.be, kill: make(chan struct{})}, open: make(chan struct{})}
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{
		Feed: feed, Deliverer: del, Buses: f.be, ReportEvery: 10 * time.Millisecond, ResubscribeDelay: 5 * time.Millisecond,
	}})
	var reopen sync.Once
	t.Cleanup(func() { reopen.Do(func() { close(feed.open) }) }) // runs before the pipeline stops
	f.waitRunning(t)

	o1 := f.submit(t, send("one", "1"))
	select {
	case m := <-del.delivered:
		if m.ID != o1.ID {
			t.Fatalf("delivered %s, want %s", m.ID, o1.ID)
		}
	case <-time.After(wait):
		t.Fatalf("nothing delivered within %v", wait)
	}
	eventually(t, "Positions() at the first seq", func() bool { return slices.Equal(f.p.Positions(), []string{o1.Seq}) })
	quietFor(t, "resync without a gap", del.resyncs, 50*time.Millisecond)

	// The subscription drops and cannot be opened again, so the delivery
	// stays at o1 while the feed publishes to nobody and trims past it.
	close(feed.Feed.(*cutFeed).kill)
	var outs []pipeline.Outcome
	for i := range 4 {
		outs = append(outs, f.submit(t, send(fmt.Sprint("after ", i), fmt.Sprint("a", i))))
	}
	var trimmed string
	eventually(t, "the feed trimmed past the first seq", func() bool {
		st, err := f.be.BusState(context.Background(), 0)
		trimmed = st.Trimmed
		return err == nil && pipeline.CompareSeq(st.Trimmed, o1.Seq) > 0
	})
	select {
	case match := <-del.resyncs:
		if !match("lobby") || !match("any-room") {
			t.Fatalf("resync does not match the rooms of the only partition")
		}
	case <-time.After(wait):
		t.Fatalf("no resync within %v of the gap", wait)
	}
	quietFor(t, "second resync for the same gap", del.resyncs, 100*time.Millisecond)

	// Subscribed again after o1, the delivery gets what the feed kept, in
	// order; what it trimmed is lost.
	reopen.Do(func() { close(feed.open) })
	var kept []pipeline.Outcome
	for _, o := range outs {
		if pipeline.CompareSeq(o.Seq, trimmed) > 0 {
			kept = append(kept, o)
		}
	}
	if len(kept) == 0 || len(kept) == len(outs) {
		t.Fatalf("the feed kept %d of %d messages, the test expected some lost", len(kept), len(outs))
	}
	for _, o := range kept {
		select {
		case m := <-del.delivered:
			if m.ID != o.ID {
				t.Fatalf("delivered %s (%q), want %s", m.ID, m.Text, o.ID)
			}
		case <-time.After(wait):
			t.Fatalf("%s not delivered within %v", o.ID, wait)
		}
	}
	last := outs[len(outs)-1].Seq
	eventually(t, "Positions() at the last seq", func() bool { return slices.Equal(f.p.Positions(), []string{last}) })
	quietFor(t, "resync after catching up", del.resyncs, 50*time.Millisecond)
}

// brokenFeed is the memory backend's feed whose subscriptions end at once
// while broken is set, like a feed whose reads fail.
type brokenFeed struct {
	be     *memstore.Backend
	broken atomic.Bool
}

func (f *brokenFeed) Partitions() int { return f.be.Partitions() }

func (f *brokenFeed) Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error) {
	if f.broken.Load() {
		ch := make(chan *message.Message)
		close(ch)
		return ch, nil
	}
	return f.be.Subscribe(ctx, p, after)
}

// TestDeliveryFeedReadFailuresLogged: subscriptions that open but end at
// once (their reads fail) are logged once as failing, not once per retry,
// and once as recovered when a subscription works again (stays open for
// ReportEvery).
func TestDeliveryFeedReadFailuresLogged(t *testing.T) {
	f := newFixture(t, roomMaxLen)
	feed := &brokenFeed{be: f.be}
	feed.broken.Store(true)
	var logs syncbuf.Buffer
	f.start(t, pipeline.Config{Delivery: pipeline.DeliveryConfig{
		Feed: feed, ResubscribeDelay: 10 * time.Millisecond, ReportEvery: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	}})
	f.waitRunning(t)
	eventually(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "feed subscription failing") })
	time.Sleep(200 * time.Millisecond) // many more retries
	if c := strings.Count(logs.String(), "feed subscription"); c != 1 {
		t.Fatalf("%d lines about the feed subscription while it kept failing, want 1:\n%s", c, logs.String())
	}
	feed.broken.Store(false)
	time.Sleep(50 * time.Millisecond) // the next subscription works
	o := f.submit(t, send("after", "1"))
	if m := f.nextDelivery(t); m.ID != o.ID {
		t.Fatalf("delivered %s, want %s", m.ID, o.ID)
	}
	eventually(t, "the recovery logged", func() bool { return strings.Contains(logs.String(), "feed subscription recovered") })
}
