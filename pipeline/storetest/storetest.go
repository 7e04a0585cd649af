// Package storetest is the contract suite that every chatstream backend
// passes: the memory backend and the Redis Streams backend run the same
// tests through Run.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/pipeline"
)

// Options are what a test needs of a new backend. A zero field takes the
// backend's default.
type Options struct {
	// RoomMaxLen is about how many messages are kept per room.
	RoomMaxLen int
	// RoomTTL is how long an idle room is kept.
	RoomTTL time.Duration
	// IdempotencyWindow is how long a send is remembered.
	IdempotencyWindow time.Duration
	// MaxRooms caps the rooms the memory backend keeps (Redis has no cap).
	MaxRooms int
}

// Harness makes the backends of the suite.
type Harness struct {
	// New returns a new, empty backend made with o. The suite closes it.
	New func(t *testing.T, o Options) pipeline.Backend
	// Lose makes b lose everything it stores for room, as a Redis that lost
	// the room's keys or a memory backend that evicted the room; o is what
	// b was made with.
	Lose func(t *testing.T, b pipeline.Backend, o Options, room string)
}

// wait bounds every expected event.
const wait = 5 * time.Second

// Run runs the contract suite against the backends h makes. The subtests
// run in parallel, each with its own backend.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		opts Options
		fn   func(t *testing.T, h Harness, b pipeline.Backend, o Options)
	}{
		{"AppendAssignsIncreasingSeqs", Options{}, plain(appendAssignsIncreasingSeqs)},
		{"HistoryLast", Options{}, plain(historyLast)},
		{"HistoryAfter", Options{}, plain(historyAfter)},
		{"HistoryBefore", Options{}, plain(historyBefore)},
		{"UnknownRoomIsEmpty", Options{}, plain(unknownRoomIsEmpty)},
		{"OddQueries", Options{}, plain(oddQueries)},
		{"FeedDeliversInOrder", Options{}, plain(feedDeliversInOrder)},
		{"FeedResumesAfterSeq", Options{}, plain(feedResumesAfterSeq)},
		{"ConcurrentAppendsOneOrder", Options{}, plain(concurrentAppendsOneOrder)},
		{"AppendAsyncKeepsQueueOrder", Options{}, plain(appendAsyncKeepsQueueOrder)},
		{"DeadLetterAndPing", Options{}, plain(deadLetterAndPing)},
		{"Truncated", Options{RoomMaxLen: 10}, plain(truncated)},
		{"IdempotentAppend", Options{}, plain(idempotentAppend)},
		{"ConcurrentDuplicates", Options{}, plain(concurrentDuplicates)},
		{"IdempotencyWindowEnds", Options{IdempotencyWindow: windowShort}, plain(idempotencyWindowEnds)},
		{"EpochStable", Options{}, plain(epochStable)},
		{"EpochChangesAfterLoss", Options{MaxRooms: 4}, epochChangesAfterLoss},
		{"IdleRoomExpires", Options{RoomTTL: roomTTLShort}, idleRoomExpires},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := h.New(t, tc.opts)
			t.Cleanup(func() { _ = b.Close() })
			tc.fn(t, h, b, tc.opts)
		})
	}
}

// plain adapts a test that needs only its backend.
func plain(fn func(t *testing.T, b pipeline.Backend)) func(*testing.T, Harness, pipeline.Backend, Options) {
	return func(t *testing.T, _ Harness, b pipeline.Backend, _ Options) { fn(t, b) }
}

// Timings of the tests that wait for something to expire. Waits for an
// expiry are longer than the limit (always safe); the one wait that must
// stay shorter than a limit (a refreshed room) keeps most of it in reserve.
const (
	// windowShort is the idempotency window of the test that outlives it.
	windowShort = 200 * time.Millisecond
	// roomTTLShort is the room TTL of the test that lets a room expire.
	roomTTLShort = 1500 * time.Millisecond
)

// refs makes each test message's ref unique, so only the tests of
// idempotency send a ref twice.
var refs atomic.Int64

// newMessage builds a message as the pipeline does, with a unique ref.
func newMessage(room, user, text string) *message.Message {
	return newSend(room, user, fmt.Sprintf("ref-%s-%d", text, refs.Add(1)), text)
}

// newSend builds a message with the given ref ("" for none).
func newSend(room, user, ref, text string) *message.Message {
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "conn-1")
	if ref != "" {
		m.Metadata.Set(pipeline.MetaRef, ref)
	}
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return m
}

// fill appends n messages "m0".."m(n-1)" to room and returns their seqs.
func fill(t *testing.T, b pipeline.Backend, room string, n int) []string {
	t.Helper()
	seqs := make([]string, n)
	for i := range n {
		seqs[i] = appendOK(t, b, newMessage(room, "alice", fmt.Sprintf("m%d", i))).Seq
	}
	return seqs
}

// appendOK appends m and fails the test on an error.
func appendOK(t *testing.T, b pipeline.Backend, m *message.Message) pipeline.Appended {
	t.Helper()
	a, err := b.Append(context.Background(), m)
	if err != nil {
		t.Fatalf("append %q: %v", m.Payload, err)
	}
	return a
}

func texts(ms []pipeline.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Text
	}
	return out
}

func history(t *testing.T, b pipeline.Backend, room string, q pipeline.HistoryQuery) pipeline.HistoryPage {
	t.Helper()
	p, err := b.History(context.Background(), room, q)
	if err != nil {
		t.Fatalf("history %+v: %v", q, err)
	}
	return p
}

func want(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func appendAssignsIncreasingSeqs(t *testing.T, b pipeline.Backend) {
	seqs := fill(t, b, "lobby", 20)
	for i := 1; i < len(seqs); i++ {
		if pipeline.CompareSeq(seqs[i-1], seqs[i]) >= 0 {
			t.Fatalf("seq %d %s is not after %s", i, seqs[i], seqs[i-1])
		}
	}
	sent := newMessage("lobby", "alice", "m20")
	a := appendOK(t, b, sent)
	if a.ID != sent.UUID || a.Duplicate || a.Epoch == "" || pipeline.CompareSeq(seqs[19], a.Seq) >= 0 {
		t.Fatalf("append = %+v, want id %s, a seq after %s, an epoch, not a duplicate", a, sent.UUID, seqs[19])
	}
	p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 1})
	m := p.Messages[0]
	if m.Seq != a.Seq || m.User != "alice" || m.Text != "m20" || m.Ref != sent.Metadata.Get(pipeline.MetaRef) || m.Room != "lobby" || m.TS.IsZero() || m.ID != sent.UUID {
		t.Fatalf("stored message = %+v, want m20 with seq %s and every field", m, a.Seq)
	}
}

func historyLast(t *testing.T, b pipeline.Backend) {
	fill(t, b, "lobby", 8)
	fill(t, b, "other", 3)
	want(t, "last 3", texts(history(t, b, "lobby", pipeline.HistoryQuery{Limit: 3}).Messages), "m5", "m6", "m7")
	if got := len(history(t, b, "lobby", pipeline.HistoryQuery{Limit: 100}).Messages); got != 8 {
		t.Fatalf("last 100 of 8 = %d messages", got)
	}
}

func historyAfter(t *testing.T, b pipeline.Backend) {
	seqs := fill(t, b, "lobby", 8)
	p := history(t, b, "lobby", pipeline.HistoryQuery{After: seqs[4], Limit: 100})
	want(t, "after m4", texts(p.Messages), "m5", "m6", "m7")
	if p.Truncated {
		t.Fatal("after m4 reported truncated")
	}
	page := history(t, b, "lobby", pipeline.HistoryQuery{After: seqs[1], Limit: 2})
	want(t, "after m1 limit 2", texts(page.Messages), "m2", "m3")
	if page.Next != seqs[3] {
		t.Fatalf("next after a full page = %q, want %s", page.Next, seqs[3])
	}
	if p.Next != "" {
		t.Fatalf("next after the last page = %q, want empty", p.Next)
	}
	if p := history(t, b, "lobby", pipeline.HistoryQuery{After: seqs[7], Limit: 10}); len(p.Messages) != 0 || p.Truncated {
		t.Fatalf("after the last = %v (truncated %v), want nothing", texts(p.Messages), p.Truncated)
	}
}

func historyBefore(t *testing.T, b pipeline.Backend) {
	seqs := fill(t, b, "lobby", 8)
	want(t, "2 before m5", texts(history(t, b, "lobby", pipeline.HistoryQuery{Before: seqs[5], Limit: 2}).Messages), "m3", "m4")
	want(t, "10 before m2", texts(history(t, b, "lobby", pipeline.HistoryQuery{Before: seqs[2], Limit: 10}).Messages), "m0", "m1")
}

func unknownRoomIsEmpty(t *testing.T, b pipeline.Backend) {
	for _, q := range []pipeline.HistoryQuery{{Limit: 5}, {After: "1-0", Limit: 5}, {Before: "99999999999999-0", Limit: 5}} {
		if p := history(t, b, "nobody-here", q); len(p.Messages) != 0 || p.Truncated || p.Epoch != "" || p.Next != "" {
			t.Fatalf("unknown room %+v = %+v", q, p)
		}
	}
}

// receive reads n messages from ch, acking each.
func receive(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var out []*message.Message
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("feed closed after %d of %d messages", len(out), n)
			}
			out = append(out, m)
			m.Ack()
		case <-time.After(wait):
			t.Fatalf("feed: got %d of %d messages", len(out), n)
		}
	}
	return out
}

func feedDeliversInOrder(t *testing.T, b pipeline.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	room := "lobby"
	part := pipeline.PartitionOf(room, b.Partitions())
	fill(t, b, room, 2) // before the subscription: not delivered
	ch, err := b.Subscribe(ctx, part, "")
	if err != nil {
		t.Fatal(err)
	}
	seqs := fill(t, b, room, 10)
	got := receive(t, ch, 10)
	for i, m := range got {
		pm, err := pipeline.FromWatermill(m)
		if err != nil {
			t.Fatal(err)
		}
		if pm.Seq != seqs[i] || pm.Text != fmt.Sprintf("m%d", i) {
			t.Fatalf("feed message %d = %s %q, want %s m%d", i, pm.Seq, pm.Text, seqs[i], i)
		}
	}
}

func feedResumesAfterSeq(t *testing.T, b pipeline.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	room := "lobby"
	seqs := fill(t, b, room, 6)
	ch, err := b.Subscribe(ctx, pipeline.PartitionOf(room, b.Partitions()), seqs[2])
	if err != nil {
		t.Fatal(err)
	}
	more := fill(t, b, room, 2)
	got := receive(t, ch, 5)
	wantSeqs := append(seqs[3:], more...)
	for i, m := range got {
		if s := m.Metadata.Get(pipeline.MetaSeq); s != wantSeqs[i] {
			t.Fatalf("resumed message %d has seq %s, want %s", i, s, wantSeqs[i])
		}
	}
}

func concurrentAppendsOneOrder(t *testing.T, b pipeline.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	room := "busy"
	ch, err := b.Subscribe(ctx, pipeline.PartitionOf(room, b.Partitions()), "")
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := b.Append(ctx, newMessage(room, fmt.Sprintf("u%d", w), fmt.Sprintf("%d-%d", w, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	fed := receive(t, ch, writers*each)
	stored := history(t, b, room, pipeline.HistoryQuery{Limit: writers * each}).Messages
	if len(stored) != writers*each {
		t.Fatalf("stored %d, want %d", len(stored), writers*each)
	}
	for i, m := range fed {
		if s := m.Metadata.Get(pipeline.MetaSeq); s != stored[i].Seq {
			t.Fatalf("feed order differs from history at %d: %s vs %s", i, s, stored[i].Seq)
		}
		if i > 0 && pipeline.CompareSeq(stored[i-1].Seq, stored[i].Seq) >= 0 {
			t.Fatalf("history not increasing at %d", i)
		}
	}
}

func deadLetterAndPing(t *testing.T, b pipeline.Backend) {
	ctx := context.Background()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	m := newMessage("lobby", "mallory", "spam")
	m.Metadata.Set(pipeline.MetaReason, "spam")
	if err := b.DeadLetter(ctx, m); err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	if p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10}); len(p.Messages) != 0 {
		t.Fatalf("a dead letter reached the room's history: %v", texts(p.Messages))
	}
}

func truncated(t *testing.T, b pipeline.Backend) {
	// Redis trims whole stream nodes (100 entries by default) with MAXLEN ~,
	// so enough messages are written for trimming to happen.
	seqs := fill(t, b, "lobby", 300)
	p := history(t, b, "lobby", pipeline.HistoryQuery{After: seqs[0], Limit: 500})
	if !p.Truncated {
		t.Fatal("since the first of 300 messages with a cap of ~10 is not truncated")
	}
	if len(p.Messages) == 0 || p.Messages[len(p.Messages)-1].Seq != seqs[299] {
		t.Fatal("a truncated resume must still return what exists, up to the newest")
	}
	last := history(t, b, "lobby", pipeline.HistoryQuery{After: seqs[298], Limit: 500})
	if last.Truncated || len(last.Messages) != 1 {
		t.Fatalf("since the last-but-one: %d messages, truncated %v; want 1, false", len(last.Messages), last.Truncated)
	}
}

// oddQueries: both backends answer queries at and beyond the ends of a
// room, and malformed seqs, alike.
func oddQueries(t *testing.T, b pipeline.Backend) {
	seqs := fill(t, b, "lobby", 3)
	epoch := history(t, b, "lobby", pipeline.HistoryQuery{}).Epoch
	if epoch == "" {
		t.Fatal("a room with messages has no epoch")
	}
	newest, _ := pipeline.ParseSeq(seqs[2])
	cases := []struct {
		name      string
		room      string
		q         pipeline.HistoryQuery
		want      []string
		wantEpoch string
		badSeq    bool
	}{
		{"after the newest", "lobby", pipeline.HistoryQuery{After: seqs[2], Limit: 10}, nil, epoch, false},
		{"after beyond the newest", "lobby", pipeline.HistoryQuery{After: pipeline.Seq{MS: newest.MS + 1000}.String(), Limit: 10}, nil, epoch, false},
		{"after the largest seq", "lobby", pipeline.HistoryQuery{After: "18446744073709551615-18446744073709551615", Limit: 10}, nil, epoch, false},
		{"after 0-0", "lobby", pipeline.HistoryQuery{After: "0-0", Limit: 10}, []string{"m0", "m1", "m2"}, epoch, false},
		{"after a page ending at the newest", "lobby", pipeline.HistoryQuery{After: seqs[0], Limit: 2}, []string{"m1", "m2"}, epoch, false},
		{"before 0-0", "lobby", pipeline.HistoryQuery{Before: "0-0", Limit: 10}, nil, epoch, false},
		{"before older than everything", "lobby", pipeline.HistoryQuery{Before: "1-0", Limit: 10}, nil, epoch, false},
		{"before the oldest", "lobby", pipeline.HistoryQuery{Before: seqs[0], Limit: 10}, nil, epoch, false},
		{"before the largest seq", "lobby", pipeline.HistoryQuery{Before: "18446744073709551615-18446744073709551615", Limit: 2}, []string{"m1", "m2"}, epoch, false},
		{"limit 0", "lobby", pipeline.HistoryQuery{Limit: 0}, nil, epoch, false},
		{"limit 0 after", "lobby", pipeline.HistoryQuery{After: seqs[0]}, nil, epoch, false},
		{"negative limit", "lobby", pipeline.HistoryQuery{Limit: -1}, nil, epoch, false},
		{"unknown room", "nobody-here", pipeline.HistoryQuery{Limit: 10}, nil, "", false},
		{"unknown room after the largest seq", "nobody-here", pipeline.HistoryQuery{After: "18446744073709551615-18446744073709551615", Limit: 10}, nil, "", false},
		{"unknown room before 0-0", "nobody-here", pipeline.HistoryQuery{Before: "0-0", Limit: 10}, nil, "", false},
		{"malformed after", "lobby", pipeline.HistoryQuery{After: "yesterday", Limit: 10}, nil, "", true},
		{"after without counter", "lobby", pipeline.HistoryQuery{After: "1718781639233", Limit: 10}, nil, "", true},
		{"after with a sign", "lobby", pipeline.HistoryQuery{After: "-1-0", Limit: 10}, nil, "", true},
		{"after beyond 64 bits", "lobby", pipeline.HistoryQuery{After: "18446744073709551616-0", Limit: 10}, nil, "", true},
		{"malformed before", "lobby", pipeline.HistoryQuery{Before: "1-x", Limit: 10}, nil, "", true},
		{"malformed before, limit 0", "lobby", pipeline.HistoryQuery{Before: "+", Limit: 0}, nil, "", true},
		{"malformed after, unknown room", "nobody-here", pipeline.HistoryQuery{After: "x-1"}, nil, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.History(context.Background(), tc.room, tc.q)
			if tc.badSeq {
				if !errors.Is(err, pipeline.ErrBadSeq) {
					t.Fatalf("History(%+v) = %v, %v; want an error wrapping ErrBadSeq", tc.q, texts(p.Messages), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("History(%+v): %v", tc.q, err)
			}
			want(t, "messages", texts(p.Messages), tc.want...)
			if p.Next != "" || p.Truncated || p.Epoch != tc.wantEpoch {
				t.Fatalf("next %q, truncated %v, epoch %q; want \"\", false, %q", p.Next, p.Truncated, p.Epoch, tc.wantEpoch)
			}
		})
	}
}

// idempotentAppend: a send appended again (same user, room and ref) returns
// the original id and seq and stores nothing; another user, room or ref,
// and a send without a ref, are stored.
func idempotentAppend(t *testing.T, b pipeline.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Subscribe(ctx, pipeline.PartitionOf("lobby", b.Partitions()), "")
	if err != nil {
		t.Fatal(err)
	}
	first := newSend("lobby", "alice", "c-1", "hello")
	orig := appendOK(t, b, first)
	if orig.Duplicate || orig.ID != first.UUID {
		t.Fatalf("first append = %+v, want id %s, not a duplicate", orig, first.UUID)
	}
	for i := range 3 {
		again := newSend("lobby", "alice", "c-1", "hello, retried")
		got := appendOK(t, b, again)
		if !got.Duplicate || got.ID != orig.ID || got.Seq != orig.Seq || got.Epoch != orig.Epoch {
			t.Fatalf("retry %d = %+v, want the original %+v as a duplicate", i, got, orig)
		}
	}
	cases := []struct{ name, room, user, ref string }{
		{"other user", "lobby", "bob", "c-1"},
		{"other room", "kitchen", "alice", "c-1"},
		{"other ref", "lobby", "alice", "c-2"},
		{"ref differing in case", "lobby", "alice", "C-1"},
		{"user and ref joined differently", "lobby", "alicec", "-1"},
		{"no ref", "lobby", "alice", ""},
		{"no ref again", "lobby", "alice", ""},
	}
	stored := []string{"hello"}
	for _, tc := range cases {
		send := newSend(tc.room, tc.user, tc.ref, tc.name)
		a := appendOK(t, b, send)
		// Seqs are per room: another room's may equal the original's.
		if a.Duplicate || a.ID != send.UUID || tc.room == "lobby" && a.Seq == orig.Seq {
			t.Fatalf("%s: append = %+v, want a new message", tc.name, a)
		}
		if tc.room == "lobby" {
			stored = append(stored, tc.name)
		}
	}
	want(t, "lobby's history", texts(history(t, b, "lobby", pipeline.HistoryQuery{Limit: 100}).Messages), stored...)
	appendOK(t, b, newMessage("lobby", "alice", "end"))
	want(t, "lobby's feed", feedUntil(t, ch, "lobby", "end"), append(stored, "end")...)
}

// feedUntil returns the texts of room's messages read from ch (acking
// every message) up to the one whose text is last.
func feedUntil(t *testing.T, ch <-chan *message.Message, room, last string) []string {
	t.Helper()
	var out []string
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("feed closed after %v", out)
			}
			m.Ack()
			if m.Metadata.Get(pipeline.MetaRoom) != room {
				continue
			}
			out = append(out, string(m.Payload))
			if string(m.Payload) == last {
				return out
			}
		case <-time.After(wait):
			t.Fatalf("feed: got %v, not %q", out, last)
		}
	}
}

// concurrentDuplicates: one send appended by many callers at once is
// stored once, and every caller gets its id and seq.
func concurrentDuplicates(t *testing.T, b pipeline.Backend) {
	const callers = 16
	got := make([]pipeline.Appended, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			a, err := b.Append(context.Background(), newSend("lobby", "alice", "c-1", fmt.Sprintf("try %d", i)))
			if err != nil {
				t.Error(err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	ps := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 100}).Messages
	if len(ps) != 1 {
		t.Fatalf("stored %v, want one message", texts(ps))
	}
	originals := 0
	for i, a := range got {
		if a.Seq != ps[0].Seq || a.ID != ps[0].ID {
			t.Fatalf("caller %d got %+v, want the stored %s %s", i, a, ps[0].ID, ps[0].Seq)
		}
		if !a.Duplicate {
			originals++
		}
	}
	if originals != 1 {
		t.Fatalf("%d callers were told they stored the message, want 1", originals)
	}
}

// idempotencyWindowEnds: once the window has passed, the same send is
// stored again.
func idempotencyWindowEnds(t *testing.T, b pipeline.Backend) {
	first := appendOK(t, b, newSend("lobby", "alice", "c-1", "hello"))
	time.Sleep(windowShort + windowShort/2)
	again := appendOK(t, b, newSend("lobby", "alice", "c-1", "hello again"))
	if again.Duplicate || again.Seq == first.Seq {
		t.Fatalf("after the window: %+v, want a new message (the first was %+v)", again, first)
	}
	if dup := appendOK(t, b, newSend("lobby", "alice", "c-1", "and again")); !dup.Duplicate || dup.Seq != again.Seq {
		t.Fatalf("within the new window: %+v, want a duplicate of %+v", dup, again)
	}
	want(t, "history", texts(history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10}).Messages), "hello", "hello again")
}

// epochStable: a room and its partition's feed get an epoch with their
// first message and keep it; the feed's state follows the appends.
func epochStable(t *testing.T, b pipeline.Backend) {
	ctx := context.Background()
	p := pipeline.PartitionOf("lobby", b.Partitions())
	if st, err := b.BusState(ctx, p); err != nil || st != (pipeline.BusState{}) {
		t.Fatalf("state of an empty feed = %+v, %v; want it empty", st, err)
	}
	if e := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 1}).Epoch; e != "" {
		t.Fatalf("epoch of an empty room = %q, want none", e)
	}
	first := appendOK(t, b, newMessage("lobby", "alice", "m0"))
	st, err := b.BusState(ctx, p)
	if err != nil || st.Epoch == "" || st.Last != first.Seq || st.Oldest != first.Seq {
		t.Fatalf("feed state after one append = %+v, %v; want an epoch, last and oldest %s", st, err, first.Seq)
	}
	for i := range 5 {
		a := appendOK(t, b, newMessage("lobby", "bob", fmt.Sprint("n", i)))
		if a.Epoch != first.Epoch {
			t.Fatalf("epoch changed from %q to %q at append %d", first.Epoch, a.Epoch, i)
		}
		page := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 1})
		if page.Epoch != first.Epoch {
			t.Fatalf("history's epoch %q, want the append's %q", page.Epoch, first.Epoch)
		}
		now, err := b.BusState(ctx, p)
		if err != nil || now.Epoch != st.Epoch || now.Last != a.Seq || now.Oldest != first.Seq {
			t.Fatalf("feed state = %+v, %v; want epoch %q, last %s, oldest %s", now, err, st.Epoch, a.Seq, first.Seq)
		}
	}
	other := appendOK(t, b, newMessage("kitchen", "alice", "k0"))
	if other.Epoch == "" {
		t.Fatal("a second room has no epoch")
	}
}

// epochChangesAfterLoss: a room that lost its data has no epoch and no
// messages; its next message starts a new epoch, and a send remembered
// from the lost epoch is stored again (its original is gone).
func epochChangesAfterLoss(t *testing.T, h Harness, b pipeline.Backend, o Options) {
	before := appendOK(t, b, newSend("lobby", "alice", "c-1", "before"))
	h.Lose(t, b, o, "lobby")
	if p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10}); len(p.Messages) != 0 || p.Epoch != "" {
		t.Fatalf("a lost room has %v, epoch %q; want nothing", texts(p.Messages), p.Epoch)
	}
	after := appendOK(t, b, newSend("lobby", "alice", "c-1", "after"))
	if after.Duplicate || after.Epoch == "" || after.Epoch == before.Epoch {
		t.Fatalf("first append after the loss = %+v, want a new message in a new epoch (was %q)", after, before.Epoch)
	}
	p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10})
	want(t, "history after the loss", texts(p.Messages), "after")
	if p.Epoch != after.Epoch {
		t.Fatalf("history's epoch %q, want %q", p.Epoch, after.Epoch)
	}
}

// idleRoomExpires: a room is kept RoomTTL after its last message, then
// forgotten with its epoch; the next message starts a new epoch.
func idleRoomExpires(t *testing.T, _ Harness, b pipeline.Backend, o Options) {
	step := o.RoomTTL * 6 / 10 // two steps outlive the TTL, one does not
	first := appendOK(t, b, newMessage("lobby", "alice", "m0"))
	time.Sleep(step)
	second := appendOK(t, b, newMessage("lobby", "alice", "m1"))
	time.Sleep(step)
	// Older than the TTL since the first message, younger since the second.
	p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10})
	want(t, "history of a room kept by its last message", texts(p.Messages), "m0", "m1")
	if p.Epoch != first.Epoch || second.Epoch != first.Epoch {
		t.Fatalf("epochs %q, %q, %q; want one", first.Epoch, second.Epoch, p.Epoch)
	}
	time.Sleep(o.RoomTTL)
	if p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 10}); len(p.Messages) != 0 || p.Epoch != "" {
		t.Fatalf("an idle room has %v, epoch %q; want nothing", texts(p.Messages), p.Epoch)
	}
	next := appendOK(t, b, newMessage("lobby", "alice", "m2"))
	if next.Epoch == "" || next.Epoch == first.Epoch {
		t.Fatalf("epoch after expiry = %q, want a new one (was %q)", next.Epoch, first.Epoch)
	}
}

// appendAsyncKeepsQueueOrder: many appends queued by one goroutine without
// waiting are each answered exactly once, stored in the order queued, and
// their results agree with the history.
func appendAsyncKeepsQueueOrder(t *testing.T, b pipeline.Backend) {
	const n = 300
	type result struct {
		i   int
		a   pipeline.Appended
		err error
	}
	results := make(chan result, 2*n)
	queued := 0
	for i := range n {
		i := i
		err := b.AppendAsync(newMessage("lobby", "alice", fmt.Sprint("a", i)), func(a pipeline.Appended, err error) {
			results <- result{i, a, err}
		})
		if errors.Is(err, pipeline.ErrOverloaded) {
			break // a full queue refuses; what was queued must still hold
		}
		if err != nil {
			t.Fatalf("AppendAsync %d: %v", i, err)
		}
		queued++
	}
	if queued == 0 {
		t.Fatal("nothing was queued")
	}
	seqs := make([]string, queued)
	for range queued {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("append %d: %v", r.i, r.err)
			}
			if seqs[r.i] != "" {
				t.Fatalf("append %d answered twice", r.i)
			}
			seqs[r.i] = r.a.Seq
		case <-time.After(wait):
			t.Fatalf("not every queued append answered within %v", wait)
		}
	}
	select {
	case r := <-results:
		t.Fatalf("an extra answer for append %d", r.i)
	case <-time.After(20 * time.Millisecond):
	}
	page := history(t, b, "lobby", pipeline.HistoryQuery{Limit: queued})
	if len(page.Messages) != queued {
		t.Fatalf("history holds %d messages, want %d", len(page.Messages), queued)
	}
	for i, m := range page.Messages {
		if m.Text != fmt.Sprint("a", i) || m.Seq != seqs[i] {
			t.Fatalf("message %d = %q at %s, want %q at %s (queue order)", i, m.Text, m.Seq, fmt.Sprint("a", i), seqs[i])
		}
	}
}
