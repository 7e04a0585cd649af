package memstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// sizedText is the text of message i of a room: its number, padded to n
// bytes, so every message of a test costs the same give or take its seq.
func sizedText(i, n int) string {
	s := fmt.Sprintf("%04d", i)
	return s + strings.Repeat("x", max(0, n-len(s)))
}

// appendSized appends message i of room, with a text of n bytes, and
// fails the test on an error.
func appendSized(t *testing.T, b *memstore.Backend, room string, i, n int) pipeline.Appended {
	t.Helper()
	m := message.NewMessage(fmt.Sprint(room, "-", i), []byte(sizedText(i, n)))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, "alice")
	a, err := b.Append(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// entryCost returns what the budget counts for message 0 of room with a
// text of n bytes, as a fresh backend stores it.
func entryCost(t *testing.T, room string, n int) int64 {
	t.Helper()
	b := newBackend(t, memstore.Config{})
	appendSized(t, b, room, 0, n)
	p, err := b.History(context.Background(), room, pipeline.HistoryQuery{Limit: 1})
	if err != nil || len(p.Messages) != 1 {
		t.Fatalf("History(%s) = %+v, %v; want its message", room, p, err)
	}
	return memstore.EntrySize(p.Messages[0])
}

// checkBytes fails the test when a byte counter of b is wrong or the
// rooms hold more than maxBytes.
func checkBytes(t *testing.T, b *memstore.Backend, maxBytes int64) {
	t.Helper()
	rooms, _, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if rooms > maxBytes {
		t.Fatalf("rooms hold %d bytes, more than MaxBytes %d", rooms, maxBytes)
	}
}

// TestMaxBytesEvictsLeastRecentlyUsed proves that an append beyond
// MaxBytes evicts the room whose last message is the oldest (not the room
// created first, nor one only read), which then starts a new epoch, while
// MaxRooms is far away.
func TestMaxBytesEvictsLeastRecentlyUsed(t *testing.T) {
	const text = 1000
	size := entryCost(t, "a", text)
	maxBytes := 3*size + size/2 // three messages
	b := newBackend(t, memstore.Config{MaxBytes: maxBytes})
	ctx := context.Background()
	epochs := map[string]string{}
	for _, room := range []string{"a", "b", "c"} {
		epochs[room] = appendSized(t, b, room, 0, text).Epoch
	}
	appendSized(t, b, "a", 1, text) // evicts b, the least recently used
	// Reading c does not count as use.
	if _, err := b.History(ctx, "c", pipeline.HistoryQuery{Limit: 1}); err != nil {
		t.Fatal(err)
	}
	appendSized(t, b, "d", 0, text) // evicts c
	checkBytes(t, b, maxBytes)
	for _, tc := range []struct {
		room string
		kept int
	}{{"a", 2}, {"b", 0}, {"c", 0}, {"d", 1}} {
		p, err := b.History(ctx, tc.room, pipeline.HistoryQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != tc.kept {
			t.Errorf("room %s keeps %d messages, want %d", tc.room, len(p.Messages), tc.kept)
		}
		if tc.room == "a" && p.Epoch != epochs["a"] {
			t.Errorf("a kept room's epoch changed from %q to %q", epochs["a"], p.Epoch)
		}
	}
	if e := appendSized(t, b, "b", 1, text).Epoch; e == epochs["b"] {
		t.Errorf("a room evicted by bytes came back with its old epoch %q", e)
	}
	checkBytes(t, b, maxBytes)
}

// historyView is what History tells of a room, with seqs replaced by the
// index of the message they name, so two backends can be compared.
type historyView struct {
	Texts     []string
	Truncated bool
	Next      int // -1 for none
}

// TestMaxBytesTrimsLoneRoomLikeRoomMaxLen proves that a room alone over
// MaxBytes drops its oldest messages, keeps its epoch, and that History
// reports it as it reports a room trimmed to as many messages by
// RoomMaxLen.
func TestMaxBytesTrimsLoneRoomLikeRoomMaxLen(t *testing.T) {
	const keep, n, text = 4, 3*4 + 2, 1000
	size := entryCost(t, "lobby", text)
	byCount := newBackend(t, memstore.Config{RoomMaxLen: keep})
	byBytes := newBackend(t, memstore.Config{MaxBytes: keep*size + size/2})
	queries := []struct {
		name  string
		after int // index of the After seq, or -1
		limit int
	}{
		{"latest", -1, 100},
		{"after the first", 0, 100},
		{"after the first, paged", 0, 2},
		{"after the one before the newest trimmed", n - keep - 2, 100},
		{"after the newest trimmed", n - keep - 1, 100},
		{"after the oldest kept", n - keep, 100},
	}
	views := func(b *memstore.Backend) map[string]historyView {
		var seqs []string
		var epoch string
		for i := range n {
			a := appendSized(t, b, "lobby", i, text)
			seqs = append(seqs, a.Seq)
			if i == 0 {
				epoch = a.Epoch
			}
		}
		out := map[string]historyView{}
		for _, q := range queries {
			hq := pipeline.HistoryQuery{Limit: q.limit}
			if q.after >= 0 {
				hq.After = seqs[q.after]
			}
			p, err := b.History(context.Background(), "lobby", hq)
			if err != nil {
				t.Fatal(err)
			}
			if p.Epoch != epoch {
				t.Errorf("%s: epoch %q, want the first message's %q", q.name, p.Epoch, epoch)
			}
			v := historyView{Truncated: p.Truncated, Next: slices.Index(seqs, p.Next)}
			for _, m := range p.Messages {
				v.Texts = append(v.Texts, m.Text[:4])
			}
			out[q.name] = v
		}
		return out
	}
	got, want := views(byBytes), views(byCount)
	for _, q := range queries {
		if !slices.Equal(got[q.name].Texts, want[q.name].Texts) || got[q.name].Truncated != want[q.name].Truncated || got[q.name].Next != want[q.name].Next {
			t.Errorf("%s: trimmed by bytes %+v, by count %+v", q.name, got[q.name], want[q.name])
		}
	}
	if l := len(got["latest"].Texts); l != keep {
		t.Errorf("trimmed by bytes, the room keeps %d messages, want %d", l, keep)
	}
	checkBytes(t, byBytes, keep*size+size/2)
}

// TestMaxBytesKeepsNewestMessage proves that a message larger than the
// whole budget is stored and kept alone.
func TestMaxBytesKeepsNewestMessage(t *testing.T) {
	b := newBackend(t, memstore.Config{MaxBytes: 1000})
	appendSized(t, b, "a", 0, 10)
	appendSized(t, b, "b", 0, 10)
	big := appendSized(t, b, "b", 1, 2000)
	p, err := b.History(context.Background(), "b", pipeline.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 1 || p.Messages[0].Seq != big.Seq {
		t.Fatalf("History(b) = %+v, want only the message larger than the budget", p.Messages)
	}
	if p, err := b.History(context.Background(), "a", pipeline.HistoryQuery{Limit: 10}); err != nil || len(p.Messages) != 0 {
		t.Fatalf("History(a) = %+v, %v; want a evicted", p.Messages, err)
	}
	if _, _, err := b.Bytes(); err != nil {
		t.Fatal(err)
	}
}

// TestByteCountersExact proves that the byte counters equal the sizes of
// what is kept, and every room kept holds 1 to RoomMaxLen messages in a
// bounded array, after every step of a random mix of appends (new rooms,
// duplicates, refused ones), reads, dead letters and idle periods, which
// trim rooms by RoomMaxLen and MaxBytes (the room appended to, and the
// one appended to least recently for another's append) and forget them
// by MaxRooms, MaxBytes and RoomTTL.
func TestByteCountersExact(t *testing.T) {
	const (
		steps    = 1500
		ttl      = 20 * time.Millisecond
		maxBytes = 8000
		deadMax  = 4000
	)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			b := newBackend(t, memstore.Config{
				RoomMaxLen: 4, MaxRooms: 6, MaxBytes: maxBytes, RoomTTL: ttl,
				DeadLetterMaxLen: 20, DeadLetterMaxBytes: deadMax,
			})
			ctx := context.Background()
			textLen := func() int {
				if rng.IntN(5) == 0 {
					return 1000 + rng.IntN(1000)
				}
				return rng.IntN(40)
			}
			send := func(room, user string) {
				m := message.NewMessage(fmt.Sprint("m", rng.Uint64()), []byte(strings.Repeat("x", textLen())))
				m.Metadata.Set(pipeline.MetaRoom, room)
				m.Metadata.Set(pipeline.MetaUser, user)
				if rng.IntN(2) == 0 {
					m.Metadata.Set(pipeline.MetaRef, fmt.Sprint("r", rng.IntN(8))) // sometimes a duplicate
				}
				if _, err := b.Append(ctx, m); err != nil && user != "" {
					t.Fatal(err)
				}
			}
			room := func() string {
				if rng.IntN(2) == 0 {
					return "hot" // reaches RoomMaxLen
				}
				return fmt.Sprint("r", rng.IntN(10)) // more than MaxRooms
			}
			for step := range steps {
				switch op := rng.IntN(100); {
				case op < 70:
					send(room(), "alice")
				case op < 75:
					send(room(), "") // refused: no user
				case op < 80:
					if _, err := b.History(ctx, room(), pipeline.HistoryQuery{Limit: 5}); err != nil {
						t.Fatal(err)
					}
				case op < 90:
					// A few rooms in turn: each append may trim the room
					// appended to least recently, or forget it.
					for range 5 {
						send(fmt.Sprint("r", rng.IntN(10)), "alice")
					}
				case op < 97:
					m := message.NewMessage(fmt.Sprint("d", step), []byte(strings.Repeat("x", textLen())))
					m.Metadata.Set(pipeline.MetaRoom, room())
					if err := b.DeadLetter(ctx, m); err != nil {
						t.Fatal(err)
					}
				case op < 99:
					for range 12 { // one room alone, over the budget
						send("hot", "alice")
					}
				default:
					time.Sleep(ttl + time.Millisecond) // every room idle
				}
				rooms, dead, err := b.Bytes()
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				if rooms > maxBytes {
					t.Fatalf("step %d: rooms hold %d bytes, more than MaxBytes %d", step, rooms, maxBytes)
				}
				if dead > deadMax {
					t.Fatalf("step %d: dead letters hold %d bytes, more than %d", step, dead, deadMax)
				}
			}
		})
	}
}

// TestDeadLettersBoundedByBytes proves that the dead-letter log drops its
// oldest entries beyond DeadLetterMaxBytes, while DeadLetterMaxLen is far
// away, and keeps a letter larger than the budget alone.
func TestDeadLettersBoundedByBytes(t *testing.T) {
	letter := func(i, n int) *message.Message {
		m := message.NewMessage(fmt.Sprint("dead-", i), []byte(strings.Repeat("x", n)))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		return m
	}
	size := memstore.DeadLetterSize(letter(0, 1000))
	b := newBackend(t, memstore.Config{DeadLetterMaxBytes: 3*size + size/2})
	ctx := context.Background()
	kept := func() []string {
		var ids []string
		for _, m := range b.DeadLetters() {
			ids = append(ids, m.UUID)
		}
		return ids
	}
	for i := range 10 {
		if err := b.DeadLetter(ctx, letter(i, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := kept(), []string{"dead-7", "dead-8", "dead-9"}; !slices.Equal(got, want) {
		t.Errorf("dead letters kept %v, want %v", got, want)
	}
	if err := b.DeadLetter(ctx, letter(10, 10_000)); err != nil {
		t.Fatal(err)
	}
	if got, want := kept(), []string{"dead-10"}; !slices.Equal(got, want) {
		t.Errorf("after a letter larger than the budget, dead letters kept %v, want %v", got, want)
	}
	if _, _, err := b.Bytes(); err != nil {
		t.Fatal(err)
	}
}

// TestMaxBytesCountsOnlyKeptMessages proves that a room's messages beyond
// RoomMaxLen, which History never returns, do not count against MaxBytes:
// a room over its RoomMaxLen does not make another room be evicted.
func TestMaxBytesCountsOnlyKeptMessages(t *testing.T) {
	const maxLen, text = 4, 1000
	size := entryCost(t, "hot", text)
	maxBytes := 6*size + size/2 // six messages
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen, MaxBytes: maxBytes})
	ctx := context.Background()
	appendSized(t, b, "quiet", 0, text)
	for i := range 6 {
		appendSized(t, b, "hot", i, text)
	}
	for _, tc := range []struct {
		room string
		kept int
	}{{"quiet", 1}, {"hot", maxLen}} {
		p, err := b.History(ctx, tc.room, pipeline.HistoryQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != tc.kept {
			t.Errorf("room %s keeps %d messages, want %d", tc.room, len(p.Messages), tc.kept)
		}
	}
	rooms, _, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if rooms >= (2+maxLen)*size {
		t.Errorf("rooms count %d bytes, as much as %d messages; want the %d History returns, about %d", rooms, 2+maxLen, 1+maxLen, (1+maxLen)*size)
	}
}

// TestMaxBytesTrimsLeastRecentRoomPartly proves that when an append
// brings the total over MaxBytes by less than the room appended to least
// recently holds, that room drops just enough of its oldest messages,
// keeps its epoch and reports the loss as History reports a RoomMaxLen
// trim, instead of being forgotten whole.
func TestMaxBytesTrimsLeastRecentRoomPartly(t *testing.T) {
	const keep, text = 50, 1000
	size := entryCost(t, "hot", text)
	maxBytes := keep*size + size/2
	b := newBackend(t, memstore.Config{RoomMaxLen: 1000, MaxBytes: maxBytes})
	ctx := context.Background()
	var seqs []string
	var epoch string
	for i := range keep + 10 { // trimmed alone to keep messages
		a := appendSized(t, b, "hot", i, text)
		seqs, epoch = append(seqs, a.Seq), a.Epoch
	}
	appendSized(t, b, "other", 0, text) // over by about half a message
	checkBytes(t, b, maxBytes)
	p, err := b.History(ctx, "hot", pipeline.HistoryQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Messages); n != keep-1 || p.Messages[n-1].Seq != seqs[len(seqs)-1] {
		t.Fatalf("hot keeps %d messages after one message to another room, want its newest %d", n, keep-1)
	}
	if p.Epoch != epoch {
		t.Errorf("hot's epoch changed from %q to %q", epoch, p.Epoch)
	}
	p, err = b.History(ctx, "hot", pipeline.HistoryQuery{After: seqs[0], Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Truncated || p.Messages[0].Seq != seqs[len(seqs)-keep+1] {
		t.Errorf("History(hot, after the first) = truncated %v from %s, want truncated from %s", p.Truncated, p.Messages[0].Seq, seqs[len(seqs)-keep+1])
	}
	if p, err := b.History(ctx, "other", pipeline.HistoryQuery{Limit: 10}); err != nil || len(p.Messages) != 1 {
		t.Errorf("History(other) = %+v, %v; want its message", p.Messages, err)
	}
	if e := appendSized(t, b, "hot", len(seqs), text).Epoch; e != epoch {
		t.Errorf("hot's next append has epoch %q, want its own %q", e, epoch)
	}
}

// TestRoomArrayBounded proves that a room's array of messages stays
// within a bound of what it keeps: at RoomMaxLen, however many messages
// it is sent, and when MaxBytes makes it drop most of them for other
// rooms.
func TestRoomArrayBounded(t *testing.T) {
	const maxLen = 1000
	t.Run("RoomMaxLen", func(t *testing.T) {
		b := newBackend(t, memstore.Config{RoomMaxLen: maxLen, FeedQueue: 1 << 17})
		most := 0
		for i := range 100_000 {
			appendSized(t, b, "lobby", i, 10)
			_, size := b.RoomArray("lobby")
			most = max(most, size)
		}
		if most > 2*maxLen {
			t.Errorf("the array of a room at RoomMaxLen %d grew to %d messages, want at most %d", maxLen, most, 2*maxLen)
		}
	})
	t.Run("MaxBytes", func(t *testing.T) {
		const text = 100
		size := entryCost(t, "old", text)
		b := newBackend(t, memstore.Config{RoomMaxLen: maxLen, MaxBytes: maxLen * size})
		for i := range maxLen {
			appendSized(t, b, "old", i, text)
		}
		for i := range maxLen - 10 { // each drops a message of old
			appendSized(t, b, "new", i, text)
		}
		n, arr := b.RoomArray("old")
		if n == 0 || arr > 4*n+3 {
			t.Errorf("old keeps %d messages in an array of %d, want at least one, in at most %d", n, arr, 4*n+3)
		}
	})
}

// TestStatsCountDrops: Stats counts the rooms each bound forgets whole and
// the messages dropped from rooms kept to fit MaxBytes, and reports what
// is kept.
func TestStatsCountDrops(t *testing.T) {
	t.Run("max rooms", func(t *testing.T) {
		b := newBackend(t, memstore.Config{MaxRooms: 2})
		for _, room := range []string{"a", "b", "c"} {
			appendTo(t, b, room, "hi")
		}
		if st := b.Stats(); st.Rooms != 2 || st.ForgottenMaxRooms != 1 || st.ForgottenMaxBytes != 0 || st.ForgottenIdle != 0 || st.DroppedMessages != 0 {
			t.Fatalf("Stats() = %+v, want 2 rooms kept and 1 forgotten by MaxRooms", st)
		}
	})
	t.Run("max bytes", func(t *testing.T) {
		text := strings.Repeat("x", 500)
		b := newBackend(t, memstore.Config{MaxBytes: 10_000})
		for i := range 8 {
			appendTo(t, b, "a", fmt.Sprint(i, text))
		}
		for i := range 4 { // about 12,000 bytes in all
			appendTo(t, b, "b", fmt.Sprint(i, text))
		}
		st := b.Stats()
		if st.Rooms != 2 || st.DroppedMessages == 0 || st.ForgottenMaxBytes != 0 || st.Bytes > 10_000 {
			t.Fatalf("Stats() = %+v, want room a's oldest messages dropped to fit 10,000 bytes", st)
		}
		appendTo(t, b, "b", strings.Repeat("y", 9_000)) // a cannot free enough and keep its newest
		if st = b.Stats(); st.Rooms != 1 || st.ForgottenMaxBytes != 1 || st.ForgottenMaxRooms != 0 {
			t.Fatalf("Stats() = %+v, want room a forgotten to fit MaxBytes", st)
		}
	})
	t.Run("idle", func(t *testing.T) {
		b := newBackend(t, memstore.Config{RoomTTL: 20 * time.Millisecond})
		appendTo(t, b, "a", "hi")
		time.Sleep(30 * time.Millisecond)
		appendTo(t, b, "b", "hi")
		if st := b.Stats(); st.Rooms != 1 || st.ForgottenIdle != 1 || st.ForgottenMaxRooms != 0 {
			t.Fatalf("Stats() = %+v, want room a forgotten as idle", st)
		}
		// Read after its TTL, a room is forgotten as idle too; and Stats
		// itself forgets the idle rooms of a quiet backend.
		appendTo(t, b, "c", "hi")
		time.Sleep(30 * time.Millisecond)
		if page, err := b.History(context.Background(), "b", pipeline.HistoryQuery{Limit: 10}); err != nil || len(page.Messages) != 0 {
			t.Fatalf("History of an idle room = %+v, %v; want nothing", page, err)
		}
		if st := b.Stats(); st.Rooms != 0 || st.ForgottenIdle != 3 || st.ForgottenMaxRooms != 0 || st.Bytes != 0 {
			t.Fatalf("Stats() = %+v, want every room forgotten as idle", st)
		}
	})
}
