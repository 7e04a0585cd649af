package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// TestContract runs the backend contract suite against the memory backend.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, o storetest.Options) pipeline.Backend {
			b, err := memstore.New(memstore.Config{
				RoomMaxLen: o.RoomMaxLen, RoomTTL: o.RoomTTL, IdempotencyWindow: o.IdempotencyWindow,
				MaxRooms: o.MaxRooms, Logger: quiet,
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		// Lose evicts room: a message in each of MaxRooms other rooms
		// makes it the least recently used.
		Lose: func(t *testing.T, b pipeline.Backend, o storetest.Options, room string) {
			if o.MaxRooms == 0 {
				t.Fatal("Lose needs a backend made with MaxRooms")
			}
			for i := range o.MaxRooms {
				m := message.NewMessage(fmt.Sprint("evict-", i), []byte("hi"))
				m.Metadata.Set(pipeline.MetaRoom, fmt.Sprintf("%s-evictor-%d", room, i))
				m.Metadata.Set(pipeline.MetaUser, "evictor")
				if _, err := b.Append(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
		},
	})
}

// TestConfig proves that New takes the defaults for zero limits and refuses
// negative ones, as does Validate.
func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  memstore.Config
		ok   bool
	}{
		{"zero takes defaults", memstore.Config{}, true},
		{"explicit", memstore.Config{RoomMaxLen: 10, FeedQueue: 4, DeadLetterMaxLen: 3, Logger: quiet}, true},
		{"negative room max len", memstore.Config{RoomMaxLen: -1}, false},
		{"negative feed queue", memstore.Config{FeedQueue: -1}, false},
		{"negative dead letter max len", memstore.Config{DeadLetterMaxLen: -1}, false},
		{"negative max rooms", memstore.Config{MaxRooms: -1}, false},
		{"explicit byte budgets", memstore.Config{MaxBytes: 1, DeadLetterMaxBytes: 1}, true},
		{"negative max bytes", memstore.Config{MaxBytes: -1}, false},
		{"negative dead letter max bytes", memstore.Config{DeadLetterMaxBytes: -1}, false},
		{"negative idempotency window", memstore.Config{IdempotencyWindow: -time.Second}, false},
		{"no room TTL", memstore.Config{RoomTTL: pipeline.NoRoomTTL}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := memstore.New(tc.cfg)
			if b != nil {
				t.Cleanup(func() { _ = b.Close() }) // the test is over
			}
			if (err == nil) != tc.ok || (b == nil) != !tc.ok {
				t.Fatalf("New(%+v) = %v, %v; want ok %v", tc.cfg, b, err, tc.ok)
			}
			if !tc.ok {
				if !strings.HasPrefix(err.Error(), "memstore: ") {
					t.Errorf("error %q does not name the package", err)
				}
				if verr := tc.cfg.Validate(); verr == nil {
					t.Errorf("Validate() = nil, want the error of New, %v", err)
				}
			}
		})
	}
}

// newBackend returns a default backend, closed by t.Cleanup.
func newBackend(t *testing.T, cfg memstore.Config) *memstore.Backend {
	t.Helper()
	cfg.Logger = quiet
	b, err := memstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() }) // the test is over
	return b
}

// TestInstances proves that RecordInstance keeps a copy of each instance's
// latest record and Instances returns them by id.
func TestInstances(t *testing.T) {
	b := newBackend(t, memstore.Config{})
	ctx := context.Background()
	if got, err := b.Instances(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Instances() = %+v, %v; want none", got, err)
	}
	started := time.Now().UTC()
	positions := []string{"1-0"}
	for _, info := range []pipeline.InstanceInfo{
		{ID: "b", Addr: "10.0.0.2:80", StartedAt: started, Positions: positions},
		{ID: "a", Addr: "10.0.0.1:80", StartedAt: started},
		{ID: "b", Addr: "10.0.0.2:80", StartedAt: started, Positions: []string{"2-0"}},
	} {
		if err := b.RecordInstance(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	positions[0] = "changed by the caller"
	got, err := b.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("Instances() = %+v, want a and b, by id", got)
	}
	if !slices.Equal(got[1].Positions, []string{"2-0"}) || got[1].Addr != "10.0.0.2:80" || !got[1].StartedAt.Equal(started) {
		t.Fatalf("record of b = %+v, want its latest", got[1])
	}
}

// TestBusStateOldest proves that BusState's Oldest is "" for an empty feed
// and then the seq of the oldest message the feed keeps, which moves on as
// the feed trims.
func TestBusStateOldest(t *testing.T) {
	const maxLen = 2
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen})
	ctx := context.Background()
	oldest := func() (string, error) {
		st, err := b.BusState(ctx, 0)
		return st.Oldest, err
	}
	if got, err := oldest(); err != nil || got != "" {
		t.Fatalf("Oldest() of an empty feed = %q, %v; want \"\"", got, err)
	}
	var seqs []string
	for i := range 2 * maxLen {
		msg := message.NewMessage(fmt.Sprint("msg-", i), []byte("hi"))
		msg.Metadata.Set(pipeline.MetaRoom, "lobby")
		msg.Metadata.Set(pipeline.MetaUser, "alice")
		a, err := b.Append(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		seq := a.Seq
		seqs = append(seqs, seq)
		if got, err := oldest(); err != nil || pipeline.CompareSeq(got, seqs[0]) < 0 || pipeline.CompareSeq(got, seq) > 0 {
			t.Fatalf("Oldest() after %d appends = %q, %v; want a kept seq in [%s, %s]", i+1, got, err, seqs[0], seq)
		}
	}
	// The feed trims a message only once it is published, which the feed's
	// goroutine does soon after the append.
	eventually(t, fmt.Sprintf("Oldest() past the first, %s, after %d appends to a feed keeping %d", seqs[0], 2*maxLen, maxLen), func() bool {
		got, err := oldest()
		return err == nil && pipeline.CompareSeq(got, seqs[0]) > 0
	})
}

// appendTo appends a message to room and fails the test on an error.
func appendTo(t *testing.T, b *memstore.Backend, room, text string) pipeline.Appended {
	t.Helper()
	m := message.NewMessage(fmt.Sprint(room, "-", text), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, "alice")
	a, err := b.Append(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestMaxRoomsEvictsLeastRecentlyUsed proves that a new room beyond
// MaxRooms evicts the room whose last message is the oldest (not the room
// created first, nor one only read), which then starts a new epoch.
func TestMaxRoomsEvictsLeastRecentlyUsed(t *testing.T) {
	b := newBackend(t, memstore.Config{MaxRooms: 3})
	ctx := context.Background()
	epochs := map[string]string{}
	for _, room := range []string{"a", "b", "c"} {
		epochs[room] = appendTo(t, b, room, "first").Epoch
	}
	// a is now the most recently used; reading b does not count as use.
	appendTo(t, b, "a", "again")
	if _, err := b.History(ctx, "b", pipeline.HistoryQuery{Limit: 1}); err != nil {
		t.Fatal(err)
	}
	appendTo(t, b, "d", "first") // evicts b
	cases := []struct {
		room string
		kept int
	}{{"a", 2}, {"b", 0}, {"c", 1}, {"d", 1}}
	for _, tc := range cases {
		p, err := b.History(ctx, tc.room, pipeline.HistoryQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != tc.kept {
			t.Errorf("room %s keeps %d messages, want %d", tc.room, len(p.Messages), tc.kept)
		}
	}
	if e := appendTo(t, b, "b", "back").Epoch; e == epochs["b"] {
		t.Errorf("an evicted room came back with its old epoch %q", e)
	}
	if e := appendTo(t, b, "a", "still").Epoch; e != epochs["a"] {
		t.Errorf("a kept room's epoch changed from %q to %q", epochs["a"], e)
	}
}

// TestFailedAppendAddsNoRoom proves that an Append refused because its
// message cannot be stored (it has no user) adds no room, so it evicts no
// kept room, and uses no seq.
func TestFailedAppendAddsNoRoom(t *testing.T) {
	b := newBackend(t, memstore.Config{MaxRooms: 2})
	ctx := context.Background()
	appendTo(t, b, "a", "first")
	last := appendTo(t, b, "b", "first").Seq

	bad := message.NewMessage("no-user", []byte("hi"))
	bad.Metadata.Set(pipeline.MetaRoom, "c")
	if a, err := b.Append(ctx, bad); !errors.Is(err, pipeline.ErrIncomplete) || a != (pipeline.Appended{}) {
		t.Fatalf("Append of a message without a user = %+v, %v; want pipeline.ErrIncomplete", a, err)
	}
	for _, tc := range []struct {
		room string
		kept int
	}{{"a", 1}, {"b", 1}, {"c", 0}} {
		p, err := b.History(ctx, tc.room, pipeline.HistoryQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != tc.kept {
			t.Errorf("after a refused append to a new room, room %s keeps %d messages, want %d", tc.room, len(p.Messages), tc.kept)
		}
	}
	if st, err := b.BusState(ctx, 0); err != nil || st.Last != last {
		t.Errorf("BusState().Last = %q, %v after a refused append; want the last stored, %s", st.Last, err, last)
	}
	// The refused room took no place: a third room evicts only a.
	appendTo(t, b, "d", "first")
	if p, err := b.History(ctx, "b", pipeline.HistoryQuery{Limit: 10}); err != nil || len(p.Messages) != 1 {
		t.Errorf("History(b) = %+v, %v; want its message kept", p, err)
	}
}

// TestOnlyStoredAppendCountsAsUse proves that an Append that stores
// nothing (a duplicate send, a message without a user, a full feed queue)
// leaves its room where it was among the rooms least recently appended
// to, so a new room beyond MaxRooms still evicts that room and not one
// appended to since.
func TestOnlyStoredAppendCountsAsUse(t *testing.T) {
	send := func(b *memstore.Backend, room, user, ref string) (pipeline.Appended, error) {
		m := message.NewMessage(fmt.Sprint(room, "-", time.Now().UnixNano()), []byte("hi"))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, user)
		if ref != "" {
			m.Metadata.Set(pipeline.MetaRef, ref)
		}
		return b.Append(context.Background(), m)
	}
	// sendUntilQueued retries a send refused because the feed's queue is
	// full until the feed's goroutine took a message from it.
	sendUntilQueued := func(t *testing.T, b *memstore.Backend, room string) {
		t.Helper()
		var err error
		eventually(t, "a send to "+room+" queued", func() bool {
			_, err = send(b, room, "alice", "")
			return !errors.Is(err, pipeline.ErrUnavailable)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name      string
		feedQueue int
		// touch sends to room a, which was appended to before b, and
		// fails t unless the send stores nothing.
		touch func(t *testing.T, b *memstore.Backend)
	}{
		{"duplicate", 0, func(t *testing.T, b *memstore.Backend) {
			if a, err := send(b, "a", "alice", "ref-a"); err != nil || !a.Duplicate {
				t.Fatalf("resend to a = %+v, %v; want a duplicate", a, err)
			}
		}},
		{"no user", 0, func(t *testing.T, b *memstore.Backend) {
			if _, err := send(b, "a", "", ""); !errors.Is(err, pipeline.ErrIncomplete) {
				t.Fatalf("send to a without a user: %v; want pipeline.ErrIncomplete", err)
			}
		}},
		{"feed queue full", 1, func(t *testing.T, b *memstore.Backend) {
			// A subscription that reads nothing holds the feed's goroutine
			// on one message of b, and the queue holds another.
			ctx, unsubscribe := context.WithCancel(context.Background())
			sub, err := b.Subscribe(ctx, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			sendUntilQueued(t, b, "b")
			sendUntilQueued(t, b, "b")
			if _, err := send(b, "a", "alice", ""); !errors.Is(err, pipeline.ErrUnavailable) {
				t.Fatalf("send to a with the feed's queue full: %v; want pipeline.ErrUnavailable", err)
			}
			unsubscribe()
			for range sub { // the ended subscription acks what it holds and closes
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, memstore.Config{MaxRooms: 2, FeedQueue: tc.feedQueue})
			if _, err := send(b, "a", "alice", "ref-a"); err != nil {
				t.Fatal(err)
			}
			sendUntilQueued(t, b, "b")
			tc.touch(t, b)
			sendUntilQueued(t, b, "c") // evicts a, the room appended to least recently
			for _, want := range []struct {
				room string
				kept bool
			}{{"a", false}, {"b", true}, {"c", true}} {
				p, err := b.History(context.Background(), want.room, pipeline.HistoryQuery{Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				if kept := len(p.Messages) > 0; kept != want.kept {
					t.Errorf("room %s kept: %v, want %v", want.room, kept, want.kept)
				}
			}
		})
	}
}

// TestIdempotencyRecordsBounded proves that a room remembers at most
// RoomMaxLen sends: the oldest is forgotten first, so its retry is stored
// again, while a recent one is still recognised.
func TestIdempotencyRecordsBounded(t *testing.T) {
	const maxLen = 4
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen})
	send := func(ref string) pipeline.Appended {
		t.Helper()
		m := message.NewMessage(fmt.Sprint("id-", ref, "-", time.Now().UnixNano()), []byte("hi"))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		m.Metadata.Set(pipeline.MetaRef, ref)
		a, err := b.Append(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for i := range maxLen + 1 {
		send(fmt.Sprint("r", i))
	}
	if a := send("r0"); a.Duplicate {
		t.Errorf("the oldest of %d sends in a room remembering %d is still remembered: %+v", maxLen+1, maxLen, a)
	}
	if a := send(fmt.Sprint("r", maxLen)); !a.Duplicate {
		t.Errorf("the newest send is forgotten: %+v", a)
	}
}

// TestSendKeysDoNotCollide proves that a send's record is found by its
// user and ref exactly: sends whose user and ref put together give the
// same bytes are different sends, each stored.
func TestSendKeysDoNotCollide(t *testing.T) {
	b := newBackend(t, memstore.Config{})
	for i, s := range []struct{ user, ref string }{{"ab", "c"}, {"a", "bc"}, {"a\x01", "bc"}, {"a", "\x01bc"}} {
		m := message.NewMessage(fmt.Sprint("id-", i), []byte("hi"))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, s.user)
		m.Metadata.Set(pipeline.MetaRef, s.ref)
		a, err := b.Append(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if a.Duplicate || a.ID != m.UUID {
			t.Errorf("user %q ref %q: %+v, want stored as %s", s.user, s.ref, a, m.UUID)
		}
	}
}

// TestKeptMessageIsOneString proves that a kept message costs the garbage
// collector one object, not one per field (BenchmarkCollectHistory): the
// fields History returns, and a duplicate's ID and seq, lie in one string
// each.
func TestKeptMessageIsOneString(t *testing.T) {
	b := newBackend(t, memstore.Config{})
	m := message.NewMessage("id-1", []byte("hello"))
	m.Metadata.Set(pipeline.MetaRoom, "lobby")
	m.Metadata.Set(pipeline.MetaUser, "alice")
	m.Metadata.Set(pipeline.MetaRef, "r1")
	m.Metadata.Set(pipeline.MetaReceivedAt, "2026-12-02T03:04:05.678Z")
	ctx := context.Background()
	stored, err := b.Append(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	page, err := b.History(ctx, "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("history: %+v, %v", page, err)
	}
	got := page.Messages[0]
	if got.ID != "id-1" || got.Seq != stored.Seq || got.User != "alice" || got.Text != "hello" || got.Ref != "r1" ||
		got.Room != "lobby" || got.Epoch != stored.Epoch || !got.TS.Equal(time.UnixMilli(1796180645678)) {
		t.Fatalf("history gives %+v, stored %+v", got, stored)
	}
	contiguous := func(what string, parts ...string) {
		t.Helper()
		next := unsafe.StringData(parts[0])
		for i, p := range parts[1:] {
			next = (*byte)(unsafe.Add(unsafe.Pointer(next), len(parts[i])))
			if unsafe.StringData(p) != next {
				t.Errorf("%s: %q is not kept right after %q in one string", what, p, parts[i])
			}
		}
	}
	contiguous("history", got.ID, got.Seq, got.User, got.Text, got.Ref)
	dup, err := b.Append(ctx, m)
	if err != nil || !dup.Duplicate || dup.ID != "id-1" || dup.Seq != stored.Seq {
		t.Fatalf("retry: %+v, %v; want a duplicate of %+v", dup, err, stored)
	}
	contiguous("send record", dup.ID, dup.Seq)
}
