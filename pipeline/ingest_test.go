package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// runIngest runs an Ingest alone, as a publisher-only process does, and
// waits until it accepts submissions. It is stopped by t.Cleanup, which
// checks that Run returned nil.
func runIngest(t *testing.T, cfg pipeline.IngestConfig) *pipeline.Ingest {
	t.Helper()
	in := startIngest(t, cfg)
	select {
	case <-in.Running():
	case <-time.After(wait):
		t.Fatalf("ingest not running after %v", wait)
	}
	return in
}

// startIngest starts an Ingest alone without waiting until it runs; see
// runIngest.
func startIngest(t *testing.T, cfg pipeline.IngestConfig) *pipeline.Ingest {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	in, err := pipeline.NewIngest(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
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
	return in
}

// submitTo submits s to in and returns its outcome, failing when Submit
// errs or the outcome's ref, room or ID is not s's.
func submitTo(t *testing.T, in *pipeline.Ingest, s pipeline.Submission) pipeline.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	o, err := in.Submit(ctx, s)
	if err != nil {
		t.Fatalf("Submit(%q) = %v", s.Ref, err)
	}
	if o.Ref != s.Ref || o.Room != s.Room || o.ID == "" {
		t.Fatalf("Submit(%q) = %+v, want its ref, room %q and an ID", s.Ref, o, s.Room)
	}
	return o
}

// TestIngestAlone proves that an Ingest built without a Delivery, with
// nothing subscribed to the feed, accepts and stores submissions and
// returns their outcomes, returns refusals as Outcome.Err, dead-letters
// rejections, and is closed once stopped.
func TestIngestAlone(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be, Moderators: []pipeline.Moderator{
		moderator("spam", nil, func(msg *message.Message) error {
			if strings.Contains(string(msg.Payload), "spam") {
				return pipeline.Errorf(pipeline.CodeRejected, "no spam")
			}
			return nil
		}),
	}})
	o := submitTo(t, in, send("hello", "r1"))
	if o.Err != nil {
		t.Fatalf("outcome error %s: %s", o.Err.Code, o.Err.Reason)
	}
	if _, err := pipeline.ParseSeq(o.Seq); err != nil {
		t.Fatalf("outcome seq: %v", err)
	}
	h := lastMessages(t, be, "lobby")
	if len(h) != 1 || h[0].ID != o.ID || h[0].Seq != o.Seq || h[0].Text != "hello" || h[0].User != "alice" || h[0].Ref != "r1" {
		t.Fatalf("history = %+v, want the message of outcome %+v", h, o)
	}

	refused := []struct {
		name string
		s    pipeline.Submission
		code string
	}{
		{"invalid", send("", "empty"), pipeline.CodeInvalid},
		{"too large", send(strings.Repeat("x", pipeline.DefaultMaxTextBytes+1), "big"), pipeline.CodeTooLarge},
		{"rejected", send("buy spam", "spam"), pipeline.CodeRejected},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			o := submitTo(t, in, tc.s)
			if o.Err == nil || o.Err.Code != tc.code || o.Err.Reason == "" || o.Seq != "" {
				t.Fatalf("outcome = %+v (err %+v), want %s with a reason and no seq", o, o.Err, tc.code)
			}
		})
	}
	if dl := be.DeadLetters(); len(dl) != 1 || dl[0].Metadata.Get(pipeline.MetaModerator) != "spam" ||
		dl[0].Metadata.Get(pipeline.MetaConnID) != "conn-1" {
		t.Fatalf("dead letters = %v, want the rejected message", dl)
	}
	if h := lastMessages(t, be, "lobby"); len(h) != 1 {
		t.Fatalf("history has %d messages after refusals, want 1", len(h))
	}
}

// TestIngestAloneDoesNotWaitForFeed proves that an Ingest alone stores far
// more messages than the memory feed queues, though nothing reads the feed:
// a publisher-only process does not stall. A full queue refuses with
// unavailable until it drains, so such refusals are retried.
func TestIngestAloneDoesNotWaitForFeed(t *testing.T) {
	const feedQueue = 8
	be, err := memstore.New(memstore.Config{FeedQueue: feedQueue, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() }) // the test is over
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be})
	deadline := time.Now().Add(wait)
	for i := range 4 * feedQueue {
		for {
			o := submitTo(t, in, send(fmt.Sprint("m", i), fmt.Sprint(i)))
			if o.Err == nil {
				break
			}
			if o.Err.Code != pipeline.CodeUnavailable || time.Now().After(deadline) {
				t.Fatalf("message %d refused: %+v", i, o.Err)
			}
			time.Sleep(time.Millisecond) // the queue drains
		}
	}
	if h := lastMessages(t, be, "lobby"); len(h) != 4*feedQueue {
		t.Fatalf("history has %d messages, want %d", len(h), 4*feedQueue)
	}
}

// TestIngestGate proves that an Ingest whose Gate is closed later does not
// run, and so neither stores nor returns outcomes, until the gate opens.
func TestIngestGate(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	gate := make(chan struct{})
	in := startIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be, Gate: gate})
	select {
	case <-in.Running():
		t.Fatal("ingest runs before its gate opened")
	case <-time.After(50 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if o, err := in.Submit(ctx, send("early", "e")); !errors.Is(err, context.DeadlineExceeded) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit before the gate opened = %+v, %v; want no outcome and context.DeadlineExceeded", o, err)
	}
	if h := lastMessages(t, be, "lobby"); len(h) != 0 {
		t.Fatalf("history = %+v before the gate opened, want nothing stored", h)
	}
	close(gate)
	select {
	case <-in.Running():
	case <-time.After(wait):
		t.Fatalf("ingest not running %v after its gate opened", wait)
	}
	if o := submitTo(t, in, send("later", "l")); o.Err != nil {
		t.Fatalf("outcome error after the gate opened: %+v", o.Err)
	}
}

// TestIngestClosed proves that an Ingest returns ErrClosed, and no outcome,
// once it stopped.
func TestIngestClosed(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	in, err := pipeline.NewIngest(pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	select {
	case <-in.Running():
	case <-time.After(wait):
		t.Fatalf("ingest not running after %v", wait)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if o, err := in.Submit(context.Background(), send("late", "l")); !errors.Is(err, pipeline.ErrClosed) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit after stop = %+v, %v; want no outcome and ErrClosed", o, err)
	}
	if h := lastMessages(t, be, "lobby"); len(h) != 0 {
		t.Fatalf("history = %+v, want nothing stored", h)
	}
}

// TestRunTwice proves that an Ingest, a Delivery and a Pipeline run once:
// a second Run returns ErrRunTwice instead of panicking.
func TestRunTwice(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be})
	if err := in.Run(context.Background()); !errors.Is(err, pipeline.ErrRunTwice) {
		t.Fatalf("second Ingest.Run = %v, want ErrRunTwice", err)
	}
	d, err := pipeline.NewDelivery(pipeline.DeliveryConfig{Feed: be, Deliverer: &deliveries{ch: make(chan pipeline.Message, 1)}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx); err != nil {
		t.Fatalf("first Delivery.Run = %v", err)
	}
	if err := d.Run(ctx); !errors.Is(err, pipeline.ErrRunTwice) {
		t.Fatalf("second Delivery.Run = %v, want ErrRunTwice", err)
	}
}

// TestShardOneAtATime proves that the messages of one room pass the chain
// one at a time, however many senders submit to it at once: a moderator
// never sees two of them concurrently, and the room holds every message.
func TestShardOneAtATime(t *testing.T) {
	var inFlight, maxInFlight atomic.Int32
	slow := pipeline.Moderator{Name: "slow", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			n := inFlight.Add(1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inFlight.Add(-1)
			return h(msg)
		}
	}}
	f := run(t, pipeline.Config{Ingest: pipeline.IngestConfig{Moderators: []pipeline.Moderator{slow}}})
	const senders, each = 16, 5
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				f.submit(t, pipeline.Submission{ConnID: fmt.Sprint("c", s), User: "alice", Room: "lobby", Text: "hi", Ref: fmt.Sprint(s, "-", i)})
			}
		})
	}
	wg.Wait()
	if m := maxInFlight.Load(); m != 1 {
		t.Fatalf("%d messages of one room were in the chain at once, want 1", m)
	}
	if h := lastMessages(t, f.be, "lobby"); len(h) != senders*each {
		t.Fatalf("room holds %d messages, want %d", len(h), senders*each)
	}
}

// TestRunStopsQueuedSubmissions: while a moderator holds one send of a room,
// further sends of the room wait for its shard. Once Run's context ends,
// Run waits for the send in progress only: the waiting ones are refused
// with ErrClosed without running the chain, and nothing of them is stored.
func TestRunStopsQueuedSubmissions(t *testing.T) {
	be, err := memstore.New(memstore.Config{RoomMaxLen: 100, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	entered, release := make(chan struct{}), make(chan struct{})
	var ran atomic.Int64
	hold := pipeline.Moderator{Name: "hold", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if ran.Add(1) == 1 {
				close(entered)
				<-release
			}
			return h(msg)
		}
	}}
	in, err := pipeline.NewIngest(pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: quiet, Moderators: []pipeline.Moderator{hold}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- in.Run(ctx) }()
	<-in.Running()

	type result struct {
		o   pipeline.Outcome
		err error
	}
	first := make(chan result, 1)
	go func() {
		o, err := in.Submit(context.Background(), send("held", "q0"))
		first <- result{o, err}
	}()
	<-entered
	const queued = 5
	rest := make(chan result, queued)
	for i := range queued {
		go func() {
			o, err := in.Submit(context.Background(), send("queued", fmt.Sprint("q", i+1)))
			rest <- result{o, err}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the queued sends reach the shard's lock
	cancel()
	time.Sleep(200 * time.Millisecond) // Run marks the ingest closing
	close(release)
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after the send in progress finished")
	}
	if r := <-first; r.err != nil || r.o.Err != nil || r.o.Seq == "" {
		t.Fatalf("the send in progress: %+v, %v; want it stored", r.o, r.err)
	}
	for range queued {
		if r := <-rest; !errors.Is(r.err, pipeline.ErrClosed) {
			t.Errorf("a queued send: %+v, %v; want ErrClosed", r.o, r.err)
		}
	}
	if n := ran.Load(); n != 1 {
		t.Errorf("the chain ran %d times, want 1", n)
	}
	page, err := be.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("history = %d messages, %v; want the one in progress", len(page.Messages), err)
	}
}

// saturatingStore is the memory backend with a queue that can be made to
// read as full (pipeline.Saturation).
type saturatingStore struct {
	*memstore.Backend
	full atomic.Bool
}

func (s *saturatingStore) Saturated(string) bool { return s.full.Load() }

// TestSaturatedStoreRefusesBeforeTheChain: while the store says its queue is
// full, a send is refused at once with unavailable and a retry hint, without
// running the chain (no moderator sees it) and without being stored; once
// it is not, sends pass as usual.
func TestSaturatedStoreRefusesBeforeTheChain(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	store := &saturatingStore{Backend: be}
	var seen atomic.Int64
	count := pipeline.Moderator{Name: "count", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			seen.Add(1)
			return h(msg)
		}
	}}
	in := runIngest(t, pipeline.IngestConfig{Store: store, DeadLetters: be, Moderators: []pipeline.Moderator{count}})
	store.full.Store(true)
	o := submitRefused(t, in, send("busy", "s1"))
	if o.Err.Code != pipeline.CodeUnavailable || o.Err.RetryAfter <= 0 {
		t.Fatalf("refusal %+v, want unavailable with a retry hint", o.Err)
	}
	if n := seen.Load(); n != 0 {
		t.Fatalf("the chain ran %d times for a send refused as saturated", n)
	}
	if st := in.Stats(); st.Overloaded != 1 || st.Refused != 1 || st.Stored != 0 {
		t.Fatalf("stats %+v, want 1 overloaded and refused, 0 stored", st)
	}
	store.full.Store(false)
	if o := submitTo(t, in, send("fine", "s2")); o.Err != nil || o.Seq == "" {
		t.Fatalf("after the queue drained: %+v", o)
	}
	page, err := be.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Text != "fine" {
		t.Fatalf("history = %+v, %v; want only the send made after the queue drained", page.Messages, err)
	}
}

// submitRefused submits s to in and returns its outcome, failing unless it
// is a refusal of s.
func submitRefused(t *testing.T, in *pipeline.Ingest, s pipeline.Submission) pipeline.Outcome {
	t.Helper()
	o, err := in.Submit(context.Background(), s)
	if err != nil {
		t.Fatalf("Submit(%q) = %v", s.Ref, err)
	}
	if o.Err == nil || o.Ref != s.Ref || o.Room != s.Room {
		t.Fatalf("Submit(%q) = %+v, want a refusal of it", s.Ref, o)
	}
	return o
}

// TestChainFailuresLoggedOnce: a middleware that panics on every message
// answers each sender internal, and is logged once while it lasts and
// once when a message gets through again, not once per message.
func TestChainFailuresLoggedOnce(t *testing.T) {
	be, err := memstore.New(memstore.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	buggy := pipeline.Moderator{Name: "buggy", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			if string(m.Payload) == "boom" {
				panic("a bug")
			}
			return h(m)
		}
	}}
	var logs syncbuf.Buffer
	ctx := t.Context()
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: be,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Moderators: []pipeline.Moderator{buggy}})
	for i := range 5 {
		o, err := in.Submit(ctx, pipeline.Submission{User: "alice", Room: "lobby", Text: "boom", Ref: fmt.Sprint("b", i)})
		if err != nil || o.Err == nil || o.Err.Code != pipeline.CodeInternal {
			t.Fatalf("send %d: %+v, %v; want internal", i, o.Err, err)
		}
	}
	if o, err := in.Submit(ctx, pipeline.Submission{User: "alice", Room: "lobby", Text: "fine", Ref: "f"}); err != nil || o.Err != nil {
		t.Fatalf("a good message: %+v, %v", o.Err, err)
	}
	out := logs.String()
	if strings.Count(out, "message chain failing") != 1 || strings.Count(out, "message chain recovered") != 1 || strings.Contains(out, "pipeline failed") {
		t.Fatalf("log:\n%s\nwant one line when the failures start and one when they end", out)
	}
}

// TestShardWaitBounded: while a moderator holds one send of a shard for
// longer than ShardWait, another send of the shard (another room) is
// refused at once with unavailable and a retry hint, without running the
// chain, instead of waiting for it; a send that was already waiting gives
// up once it gets the shard. Once the moderator lets go, the held send is
// stored and the shard takes sends again; the busy spell is logged once
// when it starts and once when it ends.
func TestShardWaitBounded(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	const shardWait = 20 * time.Millisecond
	entered, release := make(chan struct{}), make(chan struct{})
	var ran atomic.Int64
	hold := pipeline.Moderator{Name: "hold", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ran.Add(1)
			if msg.Metadata.Get(pipeline.MetaRoom) == "slow" {
				close(entered)
				<-release
			}
			return h(msg)
		}
	}}
	var logs syncbuf.Buffer
	in := runIngest(t, pipeline.IngestConfig{
		Store: be, DeadLetters: be, Shards: 1, ShardWait: shardWait,
		Moderators: []pipeline.Moderator{hold},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	type result struct {
		o   pipeline.Outcome
		err error
	}
	submit := func(s pipeline.Submission) chan result {
		ch := make(chan result, 1)
		go func() {
			o, err := in.Submit(context.Background(), s)
			ch <- result{o, err}
		}()
		return ch
	}
	held := submit(pipeline.Submission{ConnID: "c1", User: "alice", Room: "slow", Text: "held", Ref: "h"})
	<-entered
	waiting := submit(pipeline.Submission{ConnID: "c2", User: "bob", Room: "fast", Text: "waiting", Ref: "w"})
	time.Sleep(5 * shardWait) // the held send is past ShardWait, the waiting one waits
	refused := func(name string, ch chan result) {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil || r.o.Err == nil || r.o.Err.Code != pipeline.CodeUnavailable || r.o.Err.RetryAfter <= 0 {
				t.Fatalf("%s send: %+v, %v; want unavailable with a retry hint", name, r.o, r.err)
			}
		case <-time.After(wait):
			t.Fatalf("%s send not answered within %v while the shard was held", name, wait)
		}
	}
	refused("a later", submit(pipeline.Submission{ConnID: "c3", User: "carol", Room: "fast", Text: "later", Ref: "l"}))
	close(release)
	refused("the waiting", waiting)
	if r := <-held; r.err != nil || r.o.Err != nil || r.o.Seq == "" {
		t.Fatalf("held send: %+v, %v; want it stored", r.o, r.err)
	}
	if n := ran.Load(); n != 1 {
		t.Fatalf("the chain ran %d times, want once (the refused sends must not run it)", n)
	}
	if o := submitTo(t, in, pipeline.Submission{ConnID: "c3", User: "carol", Room: "fast", Text: "after", Ref: "a"}); o.Err != nil || o.Seq == "" {
		t.Fatalf("after the moderator let go: %+v, want stored", o)
	}
	page, err := be.History(context.Background(), "fast", pipeline.HistoryQuery{Limit: 10})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Text != "after" {
		t.Fatalf("history of fast = %+v, %v; want only the send made after", page.Messages, err)
	}
	if st := in.Stats(); st.ShardBusy != 2 || st.Overloaded != 0 || st.Refused != 2 || st.Stored != 2 {
		t.Fatalf("stats %+v, want 2 refused as shard busy (not overloaded) and 2 stored", st)
	}
	out := logs.String()
	if c := strings.Count(out, "ingress shards"); c != 2 {
		t.Fatalf("log mentions the busy shard %d times, want a start and an end:\n%s", c, out)
	}
}

// silentStore is the memory backend, except that it never answers the
// append of a message whose text is "lost" (and does not store it), as a
// store with a bug might.
type silentStore struct{ *memstore.Backend }

func (s silentStore) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	if string(msg.Payload) == "lost" {
		return nil
	}
	return s.Backend.AppendAsync(msg, done)
}

// TestWaitGuardAnswersAStoreThatNeverCalls: a send whose store never calls
// back is answered unavailable after twice StoreTimeout (retry with the
// same ref), not held for ever; the sends after it, which take the same
// pooled guard timers, get their own outcomes, never an earlier timer's.
func TestWaitGuardAnswersAStoreThatNeverCalls(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	const timeout = 50 * time.Millisecond
	in := runIngest(t, pipeline.IngestConfig{Store: silentStore{be}, DeadLetters: be, Logger: quiet, StoreTimeout: timeout})
	for round := range 3 {
		start := time.Now()
		s := send("lost", fmt.Sprint("lost-", round))
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		o, err := in.Submit(ctx, s)
		cancel()
		if err != nil || o.Err == nil || o.Ref != s.Ref {
			t.Fatalf("round %d: Submit = %+v, %v; want the guard's answer", round, o, err)
		}
		if o.Err.Code != pipeline.CodeUnavailable || !strings.Contains(o.Err.Reason, "retry with the same ref") {
			t.Fatalf("round %d: %+v, want unavailable asking for a retry", round, o.Err)
		}
		if took := time.Since(start); took < 2*timeout {
			t.Fatalf("round %d: answered after %v, before the guard's %v", round, took, 2*timeout)
		}
		for i := range 20 {
			if o := submitTo(t, in, send("kept", fmt.Sprintf("kept-%d-%d", round, i))); o.Err != nil || o.Seq == "" {
				t.Fatalf("round %d send %d: %+v, want it stored", round, i, o)
			}
		}
	}
	page, err := be.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 100})
	if err != nil || len(page.Messages) != 60 {
		t.Fatalf("history: %d messages, %v; want the 60 kept", len(page.Messages), err)
	}
}
