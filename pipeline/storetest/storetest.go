// Package storetest is the contract suite that every chatstream backend
// passes: the memory backend and the Redis Streams backend run the same
// tests through Run.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/pipeline"
)

// Factory returns a new, empty backend that keeps about roomMaxLen messages
// per room. The suite closes it.
type Factory func(t *testing.T, roomMaxLen int) pipeline.Backend

// wait bounds every expected event.
const wait = 5 * time.Second

// Run runs the contract suite against backends made by newBackend.
func Run(t *testing.T, newBackend Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b pipeline.Backend)
	}{
		{"AppendAssignsIncreasingSeqs", appendAssignsIncreasingSeqs},
		{"HistoryLast", historyLast},
		{"HistoryAfter", historyAfter},
		{"HistoryBefore", historyBefore},
		{"UnknownRoomIsEmpty", unknownRoomIsEmpty},
		{"FeedDeliversInOrder", feedDeliversInOrder},
		{"FeedResumesAfterSeq", feedResumesAfterSeq},
		{"ConcurrentAppendsOneOrder", concurrentAppendsOneOrder},
		{"DeadLetterAndPing", deadLetterAndPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, 10_000)
			t.Cleanup(func() { _ = b.Close() })
			tc.fn(t, b)
		})
	}
	t.Run("Truncated", func(t *testing.T) {
		b := newBackend(t, 10)
		t.Cleanup(func() { _ = b.Close() })
		truncated(t, b)
	})
}

// newMessage builds a message as the pipeline does.
func newMessage(room, user, text string) *message.Message {
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "conn-1")
	m.Metadata.Set(pipeline.MetaRef, "ref-"+text)
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return m
}

// fill appends n messages "m0".."m(n-1)" to room and returns their seqs.
func fill(t *testing.T, b pipeline.Backend, room string, n int) []string {
	t.Helper()
	seqs := make([]string, n)
	for i := range n {
		seq, err := b.Append(context.Background(), newMessage(room, "alice", fmt.Sprintf("m%d", i)))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		seqs[i] = seq
	}
	return seqs
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
	p := history(t, b, "lobby", pipeline.HistoryQuery{Limit: 1})
	m := p.Messages[0]
	if m.Seq != seqs[19] || m.User != "alice" || m.Text != "m19" || m.Ref != "ref-m19" || m.Room != "lobby" || m.TS.IsZero() || m.ID == "" {
		t.Fatalf("stored message = %+v, want m19 with seq %s and every field", m, seqs[19])
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
		if p := history(t, b, "nobody-here", q); len(p.Messages) != 0 || p.Truncated {
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
