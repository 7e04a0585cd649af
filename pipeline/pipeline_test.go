package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// wait is the generous upper bound of every expected event in these tests.
const wait = 5 * time.Second

// roomMaxLen is the number of messages the fixture's memory backend keeps
// per room.
const roomMaxLen = 1000

// quiet is the logger of every test that does not read the log.
var quiet = slog.New(slog.DiscardHandler)

// newBackend returns a memory backend keeping roomMaxLen messages per room,
// closed by tb.Cleanup.
func newBackend(tb testing.TB, roomMaxLen int) *memstore.Backend {
	tb.Helper()
	be, err := memstore.New(memstore.Config{RoomMaxLen: roomMaxLen, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = be.Close() }) // a second Close is harmless
	return be
}

// deliveries is a pipeline.Deliverer that queues every message without
// blocking; a full queue counts a drop, which fails the test. It counts
// Resync calls, which no fixture without a bus inspector may make.
type deliveries struct {
	ch      chan pipeline.Message
	dropped atomic.Int64
	resyncs atomic.Int64
}

func (d *deliveries) Deliver(m pipeline.Message) {
	select {
	case d.ch <- m:
	default:
		d.dropped.Add(1)
	}
}

func (d *deliveries) Resync(func(room string) bool) int {
	d.resyncs.Add(1)
	return 0
}

// metaStore is the memory backend's Store that also keeps the metadata of
// every message it stored, by message id, so tests can see what the
// pipeline stored beyond what a pipeline.Message shows (e.g. MetaConnID).
type metaStore struct {
	be *memstore.Backend
	// mu guards meta.
	mu   sync.Mutex
	meta map[string]message.Metadata
}

var _ pipeline.Store = (*metaStore)(nil)

func (s *metaStore) Append(ctx context.Context, msg *message.Message) (pipeline.Appended, error) {
	a, err := s.be.Append(ctx, msg)
	if err == nil && !a.Duplicate {
		s.mu.Lock()
		s.meta[msg.UUID] = maps.Clone(msg.Metadata)
		s.mu.Unlock()
	}
	return a, err
}

// AppendAsync appends msg like Append, at once.
func (s *metaStore) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	done(s.Append(context.Background(), msg))
	return nil
}

// get returns the metadata of the stored message id.
func (s *metaStore) get(id string) (message.Metadata, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md, ok := s.meta[id]
	return md, ok
}

// fixture is a pipeline over the memory backend.
type fixture struct {
	p          *pipeline.Pipeline
	be         *memstore.Backend
	store      *metaStore
	deliveries *deliveries
	// recording is set when the pipeline stores through store, so every
	// accepted outcome must be found there.
	recording bool

	// mu guards ids: the ref of every outcome's ID submit has seen.
	mu  sync.Mutex
	ids map[string]string
}

// newFixture returns a fixture whose backend keeps maxLen messages per room;
// start runs its pipeline.
func newFixture(tb testing.TB, maxLen int) *fixture {
	tb.Helper()
	be := newBackend(tb, maxLen)
	return &fixture{
		be:         be,
		store:      &metaStore{be: be, meta: map[string]message.Metadata{}},
		deliveries: &deliveries{ch: make(chan pipeline.Message, 1<<14)},
		ids:        map[string]string{},
	}
}

// start starts a pipeline configured by cfg, filling in the fixture's
// store (which records metadata), its backend as dead letters and feed, its
// recording Deliverer and a silent logger where cfg has none (the fixture's
// recorders then stay empty). It does not wait until the pipeline runs. It
// is stopped by tb.Cleanup, which also checks that Run returned nil.
func (f *fixture) start(tb testing.TB, cfg pipeline.Config) {
	tb.Helper()
	if cfg.Ingest.Store == nil {
		cfg.Ingest.Store = f.store
		f.recording = true
	}
	if cfg.Ingest.DeadLetters == nil {
		cfg.Ingest.DeadLetters = f.be
	}
	if cfg.Ingest.Logger == nil {
		cfg.Ingest.Logger = quiet
	}
	if cfg.Delivery.Feed == nil {
		cfg.Delivery.Feed = f.be
	}
	if cfg.Delivery.Deliverer == nil {
		cfg.Delivery.Deliverer = f.deliveries
	}
	if cfg.Delivery.Logger == nil {
		cfg.Delivery.Logger = quiet
	}
	p, err := pipeline.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	f.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(wait):
			tb.Errorf("Run did not return within %v of cancel", wait)
		}
		if n := f.deliveries.dropped.Load(); n > 0 {
			tb.Errorf("%d deliveries dropped: the test's queue was too small", n)
		}
		if n := f.deliveries.resyncs.Load(); n > 0 {
			tb.Errorf("%d resyncs without a bus inspector, want 0", n)
		}
	})
}

// waitRunning fails tb unless the pipeline runs within wait.
func (f *fixture) waitRunning(tb testing.TB) {
	tb.Helper()
	select {
	case <-f.p.Running():
	case <-time.After(wait):
		tb.Fatalf("pipeline not running after %v", wait)
	}
}

// run starts a pipeline configured by cfg (see start) over a backend that
// keeps roomMaxLen messages per room, and waits until it runs.
func run(tb testing.TB, cfg pipeline.Config) *fixture {
	tb.Helper()
	f := newFixture(tb, roomMaxLen)
	f.start(tb, cfg)
	f.waitRunning(tb)
	return f
}

// submit submits s and returns its outcome, failing when Submit errs, does
// not return in time, or returns an outcome that is not s's own (see
// checkOutcome) or whose ID an earlier submission got.
func (f *fixture) submit(tb testing.TB, s pipeline.Submission) pipeline.Outcome {
	tb.Helper()
	type result struct {
		o   pipeline.Outcome
		err error
	}
	res := make(chan result, 1)
	go func() {
		o, err := f.p.Submit(context.Background(), s)
		res <- result{o, err}
	}()
	var o pipeline.Outcome
	select {
	case r := <-res:
		if r.err != nil {
			tb.Fatalf("Submit(%q) = %v", s.Ref, r.err)
		}
		o = r.o
	case <-time.After(wait):
		tb.Fatalf("Submit(%q) did not return within %v", s.Ref, wait)
	}
	if err := f.checkOutcome(s, o); err != nil {
		tb.Fatalf("Submit(%q): %v", s.Ref, err)
	}
	return o
}

// checkOutcome reports an outcome that is not s's own: its ref and room must
// be s's and its ID a UUID v7 no earlier outcome had; a refusal (Err) has no
// seq and was not stored; an acceptance has a seq and, when the fixture
// records, was stored under its ID with s's connection id, user, room and
// ref in the metadata. It is safe for concurrent use.
func (f *fixture) checkOutcome(s pipeline.Submission, o pipeline.Outcome) error {
	if o.Ref != s.Ref || o.Room != s.Room {
		return fmt.Errorf("outcome ref %q room %q, want %q and %q", o.Ref, o.Room, s.Ref, s.Room)
	}
	if id, err := uuid.Parse(o.ID); err != nil || id.Version() != 7 {
		return fmt.Errorf("outcome ID %q is not a UUID v7 (%v)", o.ID, err)
	}
	f.mu.Lock()
	prev, dup := f.ids[o.ID]
	f.ids[o.ID] = s.Ref
	f.mu.Unlock()
	if dup {
		return fmt.Errorf("outcome ID %s was already returned for ref %q", o.ID, prev)
	}
	md, stored := f.store.get(o.ID)
	if o.Err != nil {
		if o.Seq != "" || stored {
			return fmt.Errorf("refused outcome has seq %q and stored %v, want neither", o.Seq, stored)
		}
		return nil
	}
	if _, err := pipeline.ParseSeq(o.Seq); err != nil {
		return fmt.Errorf("outcome seq: %w", err)
	}
	if !f.recording {
		return nil
	}
	if !stored {
		return fmt.Errorf("accepted outcome %s was not stored", o.ID)
	}
	for k, want := range map[string]string{
		pipeline.MetaConnID: s.ConnID, pipeline.MetaUser: s.User, pipeline.MetaRoom: s.Room, pipeline.MetaRef: s.Ref,
	} {
		if got := md.Get(k); got != want {
			return fmt.Errorf("stored metadata %s = %q, want %q", k, got, want)
		}
	}
	return nil
}

// nextDelivery returns the next delivered message.
func (f *fixture) nextDelivery(t *testing.T) pipeline.Message {
	t.Helper()
	select {
	case m := <-f.deliveries.ch:
		return m
	case <-time.After(wait):
		t.Fatalf("no delivery within %v", wait)
		return pipeline.Message{}
	}
}

// history returns the last 500 messages of room.
func (f *fixture) history(t *testing.T, room string) []pipeline.Message {
	t.Helper()
	return lastMessages(t, f.be, room)
}

// lastMessages returns the last 500 messages of room in h.
func lastMessages(t *testing.T, h pipeline.History, room string) []pipeline.Message {
	t.Helper()
	page, err := h.History(context.Background(), room, pipeline.HistoryQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	return page.Messages
}

// stored returns the metadata of the stored message id, failing when the
// fixture's store has no such message.
func (f *fixture) stored(t *testing.T, id string) message.Metadata {
	t.Helper()
	md, ok := f.store.get(id)
	if !ok {
		t.Fatalf("message %s was not stored", id)
	}
	return md
}

// send is a valid submission of text to lobby with ref as its ref.
func send(text, ref string) pipeline.Submission {
	return pipeline.Submission{ConnID: "conn-1", User: "alice", Room: "lobby", Text: text, Ref: ref}
}

// calls records what moderators saw, in order.
type calls struct {
	// mu guards seen.
	mu   sync.Mutex
	seen []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	c.seen = append(c.seen, s)
	c.mu.Unlock()
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

// moderator returns a moderator named name that records "name:text" in c
// and then returns decide's error, or passes the message on when it is nil.
func moderator(name string, c *calls, decide func(msg *message.Message) error) pipeline.Moderator {
	return pipeline.Moderator{Name: name, Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if c != nil {
				c.add(name + ":" + string(msg.Payload))
			}
			if decide != nil {
				if err := decide(msg); err != nil {
					return nil, err
				}
			}
			return h(msg)
		}
	}}
}

// withModerators is a pipeline configuration with mods.
func withModerators(mods ...pipeline.Moderator) pipeline.Config {
	return pipeline.Config{Ingest: pipeline.IngestConfig{Moderators: mods}}
}

// TestSubmitStored proves that a valid submission is acknowledged with an ID
// and seq, stored with its sender's connection id, delivered with the same
// fields, and kept in the room's history.
func TestSubmitStored(t *testing.T) {
	f := run(t, pipeline.Config{})
	before := time.Now()
	o := f.submit(t, send("hello", "r1"))
	after := time.Now()
	if o.Err != nil {
		t.Fatalf("outcome error %s: %s", o.Err.Code, o.Err.Reason)
	}
	if o.Ref != "r1" || o.Room != "lobby" || o.ID == "" || o.Epoch == "" {
		t.Fatalf("outcome = %+v, want r1, lobby and an ID", o)
	}
	if got := f.stored(t, o.ID).Get(pipeline.MetaConnID); got != "conn-1" {
		t.Fatalf("stored %s = %q, want conn-1", pipeline.MetaConnID, got)
	}
	m := f.nextDelivery(t)
	want := pipeline.Message{ID: o.ID, Room: "lobby", Seq: o.Seq, User: "alice", Text: "hello", Ref: "r1", TS: m.TS, Epoch: o.Epoch}
	if m != want {
		t.Fatalf("delivered %+v, want %+v", m, want)
	}
	if m.TS.Before(before.Truncate(time.Microsecond)) || m.TS.After(after) || m.TS.Location() != time.UTC {
		t.Errorf("delivered ts %v is not the UTC receive time in [%v, %v]", m.TS, before, after)
	}
	if h := f.history(t, "lobby"); len(h) != 1 || h[0] != m {
		t.Fatalf("history = %+v, want [%+v]", h, m)
	}
	if s := f.p.Stats(); s.Stored != 1 || s.Delivered != 1 || s.Refused != 0 {
		t.Errorf("stats = %+v, want 1 stored, 1 delivered, 0 refused", s)
	}
}

// TestSubmitDuplicate proves that a send submitted again with the same
// user, room and ref is acknowledged with the id and seq stored the first
// time, and is neither stored nor delivered again; another ref is.
func TestSubmitDuplicate(t *testing.T) {
	f := run(t, pipeline.Config{})
	first := f.submit(t, send("hello", "r1"))
	f.nextDelivery(t)
	again, err := f.p.Submit(context.Background(), send("hello, retried", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Err != nil || !again.Duplicate || again.ID != first.ID || again.Seq != first.Seq || again.Epoch != first.Epoch || again.Ref != "r1" || again.Room != "lobby" {
		t.Fatalf("retry outcome = %+v, want the first's id %s and seq %s as a duplicate", again, first.ID, first.Seq)
	}
	if first.Duplicate || first.Epoch == "" {
		t.Fatalf("first outcome = %+v, want an epoch, not a duplicate", first)
	}
	other := f.submit(t, send("hello", "r2"))
	if m := f.nextDelivery(t); m.ID != other.ID {
		t.Fatalf("delivered %+v after the retry, want only r2's message %s", m, other.ID)
	}
	if h := f.history(t, "lobby"); len(h) != 2 || h[0].ID != first.ID || h[1].ID != other.ID {
		t.Fatalf("history = %+v, want r1's and r2's messages once each", h)
	}
	if s := f.p.Stats(); s.Stored != 2 || s.Refused != 0 {
		t.Errorf("stats = %+v, want 2 stored (a duplicate stores nothing), 0 refused", s)
	}
}

// TestSubmitMetaCannotOverrideCoreFields proves that a submission's extra
// metadata is stored but cannot replace the sender, room or connection.
func TestSubmitMetaCannotOverrideCoreFields(t *testing.T) {
	var seen atomic.Pointer[message.Metadata]
	f := run(t, withModerators(
		moderator("spy", nil, func(msg *message.Message) error {
			md := maps.Clone(msg.Metadata)
			seen.Store(&md)
			return nil
		}),
	))
	s := send("hi", "r1")
	s.Meta = map[string]string{
		pipeline.MetaUser: "mallory", pipeline.MetaRoom: "elsewhere", pipeline.MetaConnID: "conn-x",
		"replayed_from": "other-instance",
	}
	o := f.submit(t, s)
	if o.Err != nil || o.Room != "lobby" {
		t.Fatalf("outcome = %+v, want an ack for lobby", o)
	}
	md := f.stored(t, o.ID)
	if md.Get(pipeline.MetaConnID) != "conn-1" || md.Get(pipeline.MetaUser) != "alice" || md.Get(pipeline.MetaRoom) != "lobby" {
		t.Fatalf("stored metadata %v, want conn-1, alice and lobby", md)
	}
	if md.Get("replayed_from") != "other-instance" {
		t.Fatalf("stored metadata %v, want replayed_from kept", md)
	}
	if m := f.nextDelivery(t); m.User != "alice" || m.Room != "lobby" {
		t.Fatalf("delivered user %q room %q, want alice in lobby", m.User, m.Room)
	}
	if md := seen.Load(); md == nil || md.Get("replayed_from") != "other-instance" || md.Get(pipeline.MetaConnID) != "conn-1" {
		t.Fatalf("moderator saw metadata %v, want replayed_from kept and conn-1", md)
	}
}

// TestSubmitRefused proves that too-large and invalid submissions get an
// outcome with the right code, echo ref and room, and are neither stored,
// delivered nor dead-lettered.
func TestSubmitRefused(t *testing.T) {
	const maxText = 16
	f := run(t, pipeline.Config{Ingest: pipeline.IngestConfig{MaxTextBytes: maxText}})
	cases := []struct {
		name string
		s    pipeline.Submission
		code string
	}{
		{"text of max+1 bytes", send(strings.Repeat("x", maxText+1), "big"), pipeline.CodeTooLarge},
		{"empty text", send("", "empty"), pipeline.CodeInvalid},
		{"blank text", send(" \n\t", "blank"), pipeline.CodeInvalid},
		{"control character", send("a\x07b", "bel"), pipeline.CodeInvalid},
		{"invalid UTF-8", send("a\xffb", "utf8"), pipeline.CodeInvalid},
		{"bad room", pipeline.Submission{ConnID: "conn-1", User: "alice", Room: "no spaces", Text: "x", Ref: "room"}, pipeline.CodeInvalid},
		{"empty room", pipeline.Submission{ConnID: "conn-1", User: "alice", Room: "", Text: "x", Ref: "noroom"}, pipeline.CodeInvalid},
		{"bad user", pipeline.Submission{ConnID: "conn-1", User: " alice", Room: "lobby", Text: "x", Ref: "user"}, pipeline.CodeInvalid},
		{"bad ref", send("x", strings.Repeat("r", pipeline.MaxRefLen+1)), pipeline.CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := f.submit(t, tc.s)
			if o.Err == nil {
				t.Fatalf("outcome = %+v, want error %q", o, tc.code)
			}
			if o.Err.Code != tc.code || o.Err.Reason == "" {
				t.Fatalf("outcome error %q (%q), want %q with a reason", o.Err.Code, o.Err.Reason, tc.code)
			}
			if o.Seq != "" || o.Room != tc.s.Room {
				t.Fatalf("outcome seq %q room %q, want no seq and room %q", o.Seq, o.Room, tc.s.Room)
			}
		})
	}
	ok := f.submit(t, send(strings.Repeat("y", maxText), "exact"))
	if ok.Err != nil {
		t.Fatalf("text of exactly %d bytes refused: %s", maxText, ok.Err.Reason)
	}
	if m := f.nextDelivery(t); m.Ref != "exact" {
		t.Fatalf("first delivery is %q, want only the valid message", m.Ref)
	}
	if h := f.history(t, "lobby"); len(h) != 1 || h[0].Ref != "exact" {
		t.Fatalf("history has %d messages, want only the valid one: %+v", len(h), h)
	}
	if dl := f.be.DeadLetters(); len(dl) != 0 {
		t.Fatalf("%d refused messages were dead-lettered, want none (only moderator rejections are)", len(dl))
	}
	if s := f.p.Stats(); s.Refused != int64(len(cases)) || s.Stored != 1 {
		t.Errorf("stats = %+v, want %d refused and 1 stored", s, len(cases))
	}
}

// TestModeratorsRunInOrderAfterValidation proves that moderators see each
// message in the order they were registered, and never see a message that
// validation or the size limit refused.
func TestModeratorsRunInOrderAfterValidation(t *testing.T) {
	c := &calls{}
	f := run(t, pipeline.Config{Ingest: pipeline.IngestConfig{MaxTextBytes: 32, Moderators: []pipeline.Moderator{
		moderator("A", c, nil), moderator("B", c, nil),
	}}})
	f.submit(t, send("one", "1"))
	for _, s := range []pipeline.Submission{
		send("", "empty"),
		send("bad\x00", "nul"),
		send(strings.Repeat("z", 33), "big"),
		{ConnID: "conn-1", User: "alice", Room: "a/b", Text: "x", Ref: "room"},
	} {
		if o := f.submit(t, s); o.Err == nil {
			t.Fatalf("submission %q was accepted", s.Ref)
		}
	}
	f.submit(t, send("two", "2"))
	want := []string{"A:one", "B:one", "A:two", "B:two"}
	if got := c.list(); !slices.Equal(got, want) {
		t.Fatalf("moderators saw %v, want %v", got, want)
	}
}

// TestModeratorRejection proves that a moderator's rejection reaches the
// sender with the moderator's name, stops the chain, is not stored, and is
// dead-lettered with reason, code, moderator and the sender's connection; a
// rate limit from a moderator is refused but not dead-lettered.
func TestModeratorRejection(t *testing.T) {
	c := &calls{}
	f := run(t, withModerators(
		moderator("flood", c, func(msg *message.Message) error {
			if msg.Metadata.Get(pipeline.MetaUser) == "flooder" {
				e := pipeline.Errorf(pipeline.CodeRateLimited, "slow down")
				e.RetryAfter = time.Second
				return e
			}
			return nil
		}),
		moderator("spam", c, func(msg *message.Message) error {
			if strings.Contains(string(msg.Payload), "spam") {
				return pipeline.Errorf(pipeline.CodeRejected, "no spam please")
			}
			return nil
		}),
		moderator("last", c, nil),
	))
	o := f.submit(t, pipeline.Submission{ConnID: "conn-1", User: "alice", Room: "lobby", Text: "buy spam", Ref: "s1", CorrelationID: "corr-dl"})
	if o.Err == nil || o.Err.Code != pipeline.CodeRejected || o.Err.Moderator != "spam" || o.Err.Reason != "no spam please" {
		t.Fatalf("outcome = %+v (err %+v), want rejected by spam", o, o.Err)
	}
	if got, want := c.list(), []string{"flood:buy spam", "spam:buy spam"}; !slices.Equal(got, want) {
		t.Fatalf("moderators saw %v, want %v: a rejection ends the chain", got, want)
	}
	dl := f.be.DeadLetters()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d := dl[0]
	wantMeta := map[string]string{
		pipeline.MetaReason: "no spam please", pipeline.MetaModerator: "spam", pipeline.MetaCode: pipeline.CodeRejected,
		pipeline.MetaRoom: "lobby", pipeline.MetaUser: "alice", pipeline.MetaCorrelationID: "corr-dl",
		pipeline.MetaConnID: "conn-1", pipeline.MetaRef: "s1",
	}
	for k, v := range wantMeta {
		if got := d.Metadata.Get(k); got != v {
			t.Errorf("dead letter %s = %q, want %q", k, got, v)
		}
	}
	if d.UUID != o.ID || string(d.Payload) != "buy spam" {
		t.Errorf("dead letter %s %q, want %s with the text", d.UUID, d.Payload, o.ID)
	}

	r := f.submit(t, pipeline.Submission{ConnID: "conn-2", User: "flooder", Room: "lobby", Text: "hi", Ref: "f1"})
	if r.Err == nil || r.Err.Code != pipeline.CodeRateLimited || r.Err.Moderator != "flood" || r.Err.RetryAfter != time.Second {
		t.Fatalf("outcome = %+v (err %+v), want rate_limited by flood with retry after 1s", r, r.Err)
	}
	if n := len(f.be.DeadLetters()); n != 1 {
		t.Errorf("%d dead letters after a rate limit, want still 1", n)
	}

	ok := f.submit(t, send("ham", "h1"))
	if ok.Err != nil {
		t.Fatalf("valid message after rejections refused: %+v", ok.Err)
	}
	if m := f.nextDelivery(t); m.Ref != "h1" {
		t.Fatalf("first delivery is %q, want only the accepted message", m.Ref)
	}
	if h := f.history(t, "lobby"); len(h) != 1 {
		t.Fatalf("history has %d messages, want 1", len(h))
	}
}

// TestModeratorSharedErrorAttribution proves that a rejection is attributed
// to the moderator that returned it even when moderators return one shared
// *pipeline.Error value (a natural sentinel).
func TestModeratorSharedErrorAttribution(t *testing.T) {
	errBlocked := pipeline.Errorf(pipeline.CodeRejected, "blocked")
	rejectIf := func(text string) func(*message.Message) error {
		return func(msg *message.Message) error {
			if string(msg.Payload) == text {
				return errBlocked
			}
			return nil
		}
	}
	f := run(t, withModerators(
		moderator("A", nil, rejectIf("for A")),
		moderator("B", nil, rejectIf("for B")),
	))
	if o := f.submit(t, send("for B", "b")); o.Err == nil || o.Err.Moderator != "B" {
		t.Fatalf("first rejection: outcome %+v, want moderator B", o.Err)
	}
	o := f.submit(t, send("for A", "a"))
	if o.Err == nil || o.Err.Moderator != "A" {
		t.Errorf("BUG: rejection by A reported moderator %+v, want A (ingest.go named() must stamp the moderator's name "+
			"on a copy, or a shared error keeps the first name forever, and concurrent rejections race on it)", o.Err)
	}
	if errBlocked.Moderator != "" {
		t.Errorf("BUG: the moderator's own error value was modified: Moderator = %q", errBlocked.Moderator)
	}
}

// TestModeratorPanic proves that a panicking moderator yields an internal
// error outcome, is not dead-lettered, and leaves the pipeline (and the
// room's shard) working.
func TestModeratorPanic(t *testing.T) {
	var runs atomic.Int64
	f := run(t, withModerators(
		moderator("crashy", nil, func(msg *message.Message) error {
			if string(msg.Payload) == "boom" {
				runs.Add(1)
				panic("moderator bug")
			}
			return nil
		}),
	))
	o := f.submit(t, send("boom", "p1"))
	if o.Err == nil || o.Err.Code != pipeline.CodeInternal || o.Err.Reason == "" {
		t.Fatalf("outcome = %+v (err %+v), want %s", o, o.Err, pipeline.CodeInternal)
	}
	if strings.Contains(o.Err.Reason, "moderator bug") || strings.Contains(o.Err.Reason, "goroutine") {
		t.Errorf("internal error reason %q leaks the panic to the client", o.Err.Reason)
	}
	ok := f.submit(t, send("fine", "p2"))
	if ok.Err != nil {
		t.Fatalf("submission after a panic refused: %+v", ok.Err)
	}
	if m := f.nextDelivery(t); m.Ref != "p2" {
		t.Fatalf("first delivery %q, want p2", m.Ref)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("panicking message handled %d times, want 1", n)
	}
	if n := len(f.be.DeadLetters()); n != 0 {
		t.Errorf("%d dead letters after a panic, want 0", n)
	}
	if s := f.p.Stats(); s.Refused != 1 || s.Stored != 1 {
		t.Errorf("stats = %+v, want 1 refused and 1 stored", s)
	}
}

// failingStore is a Store whose Append always fails.
type failingStore struct{}

func (failingStore) Append(context.Context, *message.Message) (pipeline.Appended, error) {
	return pipeline.Appended{}, fmt.Errorf("test store: %w", pipeline.ErrUnavailable)
}

func (s failingStore) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	done(s.Append(context.Background(), msg))
	return nil
}

// TestStoreFailure proves that a message the store cannot store gets an
// unavailable outcome that names no moderator and is neither dead-lettered
// nor delivered.
func TestStoreFailure(t *testing.T) {
	f := run(t, pipeline.Config{Ingest: pipeline.IngestConfig{
		Store: failingStore{}, Moderators: []pipeline.Moderator{moderator("A", nil, nil)},
	}})
	o := f.submit(t, send("hello", "u1"))
	if o.Err == nil || o.Err.Code != pipeline.CodeUnavailable || o.Err.Moderator != "" || o.Seq != "" {
		t.Fatalf("outcome = %+v (err %+v), want unavailable without moderator", o, o.Err)
	}
	if n := len(f.be.DeadLetters()); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	if s := f.p.Stats(); s.Refused != 1 || s.Stored != 0 || s.Delivered != 0 {
		t.Errorf("stats = %+v, want 1 refused, nothing stored or delivered", s)
	}
}

// TestCorrelationID proves that a submission's correlation id is set on the
// message the moderators see, and that a submission without one gets the
// message's own id.
func TestCorrelationID(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]string{} // text → correlation id
	f := run(t, withModerators(
		moderator("ids", nil, func(msg *message.Message) error {
			mu.Lock()
			ids[string(msg.Payload)] = msg.Metadata.Get(pipeline.MetaCorrelationID)
			mu.Unlock()
			return nil
		}),
	))
	given := send("given", "1")
	given.CorrelationID = "corr-42"
	f.submit(t, given)
	a := f.submit(t, send("gen-a", "2"))
	b := f.submit(t, send("gen-b", "3"))
	mu.Lock()
	defer mu.Unlock()
	if ids["given"] != "corr-42" {
		t.Errorf("correlation id = %q, want the submission's corr-42", ids["given"])
	}
	if ids["gen-a"] != a.ID || ids["gen-b"] != b.ID || a.ID == b.ID {
		t.Errorf("generated correlation ids %q and %q, want the messages' ids %q and %q", ids["gen-a"], ids["gen-b"], a.ID, b.ID)
	}
}

// TestRoomOrder proves that messages submitted to one room from one
// goroutine are stored, acknowledged and delivered in submission order with
// increasing seqs, while several rooms are written concurrently.
func TestRoomOrder(t *testing.T) {
	const rooms, perRoom = 8, 100
	f := run(t, pipeline.Config{})
	var wg sync.WaitGroup
	acks := make([][]string, rooms) // seqs of each room, in submission order
	for r := range rooms {
		wg.Go(func() {
			for i := range perRoom {
				s := pipeline.Submission{
					ConnID: fmt.Sprint("conn-", r), User: "alice", Room: fmt.Sprint("room-", r),
					Text: fmt.Sprint(i), Ref: fmt.Sprint(i),
				}
				o, err := f.p.Submit(context.Background(), s)
				if err != nil {
					t.Errorf("room %d message %d: %v", r, i, err)
					return
				}
				if err := f.checkOutcome(s, o); err != nil {
					t.Errorf("room %d message %d: %v", r, i, err)
					return
				}
				if o.Err != nil {
					t.Errorf("room %d message %d refused: %+v", r, i, o.Err)
					return
				}
				acks[r] = append(acks[r], o.Seq)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	delivered := map[string][]pipeline.Message{}
	for range rooms * perRoom {
		m := f.nextDelivery(t)
		delivered[m.Room] = append(delivered[m.Room], m)
	}
	for r := range rooms {
		room := fmt.Sprint("room-", r)
		for name, got := range map[string][]pipeline.Message{"history": f.history(t, room), "deliveries": delivered[room]} {
			if len(got) != perRoom {
				t.Fatalf("%s %s: %d messages, want %d", room, name, len(got), perRoom)
			}
			for i, m := range got {
				if m.Text != fmt.Sprint(i) || m.Seq != acks[r][i] {
					t.Fatalf("%s %s[%d] = text %q seq %s, want text %d seq %s", room, name, i, m.Text, m.Seq, i, acks[r][i])
				}
				if i > 0 && pipeline.CompareSeq(got[i-1].Seq, m.Seq) >= 0 {
					t.Fatalf("%s %s: seq %s after %s", room, name, m.Seq, got[i-1].Seq)
				}
			}
		}
	}
}

// TestConcurrentSubmitOwnOutcome proves that Submit from many goroutines at
// once, several of them on one room (and so one shard), returns to each
// caller the outcome of its own submission, and that every acknowledged
// message was stored once, with its sender's connection, and delivered once.
func TestConcurrentSubmitOwnOutcome(t *testing.T) {
	const senders, each, rooms = 64, 20, 4
	f := run(t, pipeline.Config{})
	var mu sync.Mutex
	byID := map[string]pipeline.Submission{} // acknowledged id → its submission
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				s := pipeline.Submission{
					ConnID: fmt.Sprint("conn-", g), User: fmt.Sprint("user-", g), Room: fmt.Sprint("room-", g%rooms),
					Text: fmt.Sprint("text ", g, "/", i), Ref: fmt.Sprint(g, "/", i),
				}
				o, err := f.p.Submit(context.Background(), s)
				if err != nil {
					t.Errorf("sender %d message %d: %v", g, i, err)
					return
				}
				if err := f.checkOutcome(s, o); err != nil {
					t.Errorf("sender %d message %d got another's outcome: %v", g, i, err)
					return
				}
				if o.Err != nil {
					t.Errorf("sender %d message %d refused: %+v", g, i, o.Err)
					return
				}
				mu.Lock()
				byID[o.ID] = s
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(byID) != senders*each {
		t.Fatalf("%d distinct acknowledged ids, want %d", len(byID), senders*each)
	}
	seen := map[string]bool{}
	for range senders * each {
		m := f.nextDelivery(t)
		s, ok := byID[m.ID]
		if !ok || seen[m.ID] {
			t.Fatalf("delivered %+v: acknowledged %v, delivered before %v", m, ok, seen[m.ID])
		}
		seen[m.ID] = true
		if m.Ref != s.Ref || m.Text != s.Text || m.User != s.User || m.Room != s.Room {
			t.Fatalf("delivered %+v for the submission %+v", m, s)
		}
	}
	for r := range rooms {
		room := fmt.Sprint("room-", r)
		if n := len(f.history(t, room)); n != senders/rooms*each {
			t.Errorf("history of %s has %d messages, want %d", room, n, senders/rooms*each)
		}
	}
}

// TestSubmitWhenNotRunning proves that before the pipeline runs Submit
// gives up with its context, or with ErrUnavailable after StoreTimeout, and
// that it returns ErrClosed once the pipeline stopped; each time without an
// outcome and without storing anything.
func TestSubmitWhenNotRunning(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	p, err := pipeline.New(pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: quiet, StoreTimeout: 100 * time.Millisecond},
		Delivery: pipeline.DeliveryConfig{Feed: be, Deliverer: &deliveries{ch: make(chan pipeline.Message, 16)}, Logger: quiet},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if o, err := p.Submit(ctx, send("early", "e")); !errors.Is(err, context.DeadlineExceeded) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit before Run = %+v, %v; want no outcome and context.DeadlineExceeded", o, err)
	}
	if o, err := p.Submit(context.Background(), send("early", "e2")); !errors.Is(err, pipeline.ErrUnavailable) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit before Run, past StoreTimeout = %+v, %v; want no outcome and ErrUnavailable", o, err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	select {
	case <-p.Running():
	case <-time.After(wait):
		t.Fatalf("pipeline not running after %v", wait)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if o, err := p.Submit(context.Background(), send("late", "l")); !errors.Is(err, pipeline.ErrClosed) || o != (pipeline.Outcome{}) {
		t.Fatalf("Submit after stop = %+v, %v; want no outcome and ErrClosed", o, err)
	}
	if h := lastMessages(t, be, "lobby"); len(h) != 0 {
		t.Fatalf("history = %+v, want nothing stored", h)
	}
}

// TestConfigValidate proves that the ingest's and the delivery's Validate,
// and NewIngest, NewDelivery and New, refuse a configuration without store,
// dead letters, feed or deliverer, with a negative limit or interval, or with
// an incomplete moderator, and accept a complete one.
func TestConfigValidate(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	del := &deliveries{}
	// Validate checks a configuration whose defaults are filled in, as
	// NewIngest and NewDelivery do before they call it.
	valid := pipeline.Config{
		Ingest: pipeline.IngestConfig{
			Store: be, DeadLetters: be, Logger: quiet,
			MaxTextBytes: pipeline.DefaultMaxTextBytes, Shards: pipeline.DefaultShards, StoreTimeout: pipeline.DefaultStoreTimeout,
			ShardWait: pipeline.DefaultShardWait,
		},
		Delivery: pipeline.DeliveryConfig{
			Feed: be, Deliverer: del, Logger: quiet,
			ResubscribeDelay: pipeline.DefaultResubscribeDelay, ReportEvery: pipeline.DefaultReportEvery,
		},
	}
	mw := func(h message.HandlerFunc) message.HandlerFunc { return h }
	cases := []struct {
		name   string
		change func(*pipeline.Config)
		ok     bool
	}{
		{"complete", func(*pipeline.Config) {}, true},
		{"with moderator", func(c *pipeline.Config) { c.Ingest.Moderators = []pipeline.Moderator{{Name: "m", Middleware: mw}} }, true},
		{"with gate", func(c *pipeline.Config) { c.Ingest.Gate = make(chan struct{}) }, true},
		{"with instance records and bus checks", func(c *pipeline.Config) {
			c.Delivery.Instances, c.Delivery.Buses = be, be
			c.Delivery.Instance = pipeline.InstanceInfo{ID: "i-1", Addr: "127.0.0.1:1", StartedAt: time.Now()}
		}, true},
		{"no store", func(c *pipeline.Config) { c.Ingest.Store = nil }, false},
		{"no dead letters", func(c *pipeline.Config) { c.Ingest.DeadLetters = nil }, false},
		{"no feed", func(c *pipeline.Config) { c.Delivery.Feed = nil }, false},
		{"no deliverer", func(c *pipeline.Config) { c.Delivery.Deliverer = nil }, false},
		{"negative max text", func(c *pipeline.Config) { c.Ingest.MaxTextBytes = -1 }, false},
		{"negative shards", func(c *pipeline.Config) { c.Ingest.Shards = -1 }, false},
		{"negative store timeout", func(c *pipeline.Config) { c.Ingest.StoreTimeout = -time.Second }, false},
		{"negative shard wait", func(c *pipeline.Config) { c.Ingest.ShardWait = -time.Second }, false},
		{"negative resubscribe delay", func(c *pipeline.Config) { c.Delivery.ResubscribeDelay = -time.Second }, false},
		{"negative report interval", func(c *pipeline.Config) { c.Delivery.ReportEvery = -time.Second }, false},
		{"moderator without name", func(c *pipeline.Config) { c.Ingest.Moderators = []pipeline.Moderator{{Middleware: mw}} }, false},
		{"moderator without middleware", func(c *pipeline.Config) { c.Ingest.Moderators = []pipeline.Moderator{{Name: "m"}} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			ierr, derr := cfg.Ingest.Validate(), cfg.Delivery.Validate()
			if err := errors.Join(ierr, derr); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
			for _, err := range []error{ierr, derr} {
				if err != nil && !strings.HasPrefix(err.Error(), "pipeline: ") {
					t.Errorf("error %q does not name the package", err)
				}
			}
			in, err := pipeline.NewIngest(cfg.Ingest)
			if (err == nil) != (ierr == nil) || (in == nil) != (err != nil) {
				t.Errorf("NewIngest() = %v, %v; want the error of Validate, %v", in, err, ierr)
			}
			d, err := pipeline.NewDelivery(cfg.Delivery)
			if (err == nil) != (derr == nil) || (d == nil) != (err != nil) {
				t.Errorf("NewDelivery() = %v, %v; want the error of Validate, %v", d, err, derr)
			}
			p, err := pipeline.New(cfg)
			if (err == nil) != tc.ok || (p == nil) != !tc.ok {
				t.Fatalf("New() = %v, %v; want ok %v", p, err, tc.ok)
			}
		})
	}
}

// TestZeroConfigTakesDefaults proves that New, NewIngest and NewDelivery
// accept a configuration that gives only the required parts: every zero
// limit and interval takes its default.
func TestZeroConfigTakesDefaults(t *testing.T) {
	be := newBackend(t, roomMaxLen)
	in := pipeline.IngestConfig{Store: be, DeadLetters: be}
	del := pipeline.DeliveryConfig{Feed: be, Deliverer: &deliveries{}}
	if _, err := pipeline.NewIngest(in); err != nil {
		t.Errorf("NewIngest(%+v) = %v, want defaults", in, err)
	}
	if _, err := pipeline.NewDelivery(del); err != nil {
		t.Errorf("NewDelivery(%+v) = %v, want defaults", del, err)
	}
	if _, err := pipeline.New(pipeline.Config{Ingest: in, Delivery: del}); err != nil {
		t.Errorf("New() = %v, want defaults", err)
	}
}

// TestNoTextInLogs proves that a running pipeline logging at debug level
// never writes a message's text, whether it is stored, refused, rejected or
// makes a moderator panic.
func TestNoTextInLogs(t *testing.T) {
	var buf syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := run(t, pipeline.Config{
		Ingest: pipeline.IngestConfig{Logger: log, MaxTextBytes: 64, Moderators: []pipeline.Moderator{
			moderator("mod", nil, func(msg *message.Message) error {
				switch {
				case strings.HasPrefix(string(msg.Payload), "reject"):
					return pipeline.Errorf(pipeline.CodeRejected, "rejected by policy")
				case strings.HasPrefix(string(msg.Payload), "panic"):
					panic("policy crashed")
				}
				return nil
			}),
		}},
		Delivery: pipeline.DeliveryConfig{Logger: log},
	})
	texts := []string{
		"stored-" + secretText,
		"reject-" + secretText,
		"panic-" + secretText,
		"\x07invalid-" + secretText,
		"too-large-" + strings.Repeat(secretText, 4),
	}
	for i, text := range texts {
		f.submit(t, send(text, fmt.Sprint(i)))
	}
	f.nextDelivery(t)
	if !strings.Contains(buf.String(), "message handled") {
		t.Fatalf("no debug line was logged; the test does not see the log:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), secretText) {
		t.Fatalf("message text was logged:\n%s", buf.String())
	}
}
