// Package memstore is chatstream's embedded backend: rooms, history and
// delivery in the process's memory, for a single instance with nothing to
// install. Everything is lost when the process exits.
//
// Its memory is bounded: a room keeps its last RoomMaxLen messages, at
// most MaxRooms rooms are kept, and all their messages together count at
// most MaxBytes. Over MaxBytes, the rooms appended to least recently
// lose their oldest messages first, a room losing them all is forgotten,
// and the room appended to keeps at least its newest message (see
// Config.MaxBytes). The feed and the dead letters have bounds of their
// own.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/chatstream/chatstream/pipeline"
)

// Config configures a Backend. A zero field takes the default in its comment.
type Config struct {
	// RoomMaxLen is the number of messages kept per room, and the number of
	// sends per room remembered for idempotency. Default
	// pipeline.DefaultRoomMaxLen.
	RoomMaxLen int
	// MaxRooms caps the rooms kept. When a message arrives for a new room
	// and MaxRooms are kept, the room whose last message is the oldest is
	// forgotten (its history is lost and its next message starts a new
	// epoch). Default DefaultMaxRooms.
	MaxRooms int
	// MaxBytes caps the approximate size of the messages the rooms keep:
	// each counts its text and metadata plus a fixed 304 bytes (see
	// entrySize), about 400 bytes plus its text. When an append brings
	// the total above it, the room appended to least recently (not the
	// one appended to) drops just enough of its oldest messages to bring
	// it back, as RoomMaxLen drops them: the room keeps its epoch and
	// History reports the gap as Truncated. A room that cannot free
	// enough without dropping its newest message is forgotten whole
	// instead, as by MaxRooms (a room is never kept empty; its next
	// message starts a new epoch), and the next room is taken. The room
	// appended to is never forgotten for it: once it is the only room
	// left, it drops its oldest messages, keeping at least its newest, so
	// one message larger than MaxBytes is kept alone, over it. Default
	// DefaultMaxBytes; negative is refused.
	MaxBytes int64
	// RoomTTL is how long a room is kept after its last message; an idle
	// room is forgotten like an evicted one. Default
	// pipeline.DefaultRoomTTL; negative (pipeline.NoRoomTTL): kept however
	// long it stays idle (MaxRooms still applies).
	RoomTTL time.Duration
	// IdempotencyWindow is how long a send's (user, room, ref) is
	// remembered. Default pipeline.DefaultIdempotencyWindow; negative is
	// refused.
	IdempotencyWindow time.Duration
	// FeedQueue is the number of stored messages waiting for the feed
	// before Append refuses with ErrUnavailable. Default DefaultFeedQueue.
	// The feed's replay log keeps every message not yet published on the
	// feed besides the last RoomMaxLen published (at most FeedLogBytes of
	// them), so it holds fewer than 2×(RoomMaxLen+FeedQueue+1) messages.
	FeedQueue int
	// FeedLogBytes caps the approximate size (see deadLetterSize) of the
	// published messages the feed's replay log keeps as the margin of a
	// subscription that is behind: once the log holds twice this, its
	// oldest published messages are dropped down to it. A subscription
	// that falls behind what is kept sees a gap (and its members resync
	// from the rooms' logs). Default DefaultFeedLogBytes; negative is
	// refused.
	FeedLogBytes int64
	// DeadLetterMaxLen is the number of rejected messages kept. Default
	// DefaultDeadLetterMaxLen.
	DeadLetterMaxLen int
	// DeadLetterMaxBytes caps the approximate size of the rejected
	// messages kept (see deadLetterSize), apart from MaxBytes: the oldest
	// are dropped first, and the newest is always kept. Default
	// DefaultDeadLetterMaxBytes; negative is refused.
	DeadLetterMaxBytes int64
	// Logger receives the feed's diagnostics. Default slog.Default().
	Logger *slog.Logger
}

// Backend keeps rooms in memory. It is safe for concurrent use.
//
// Append hands each stored message, in seq order, to a bounded queue; one
// goroutine publishes the queue on a Watermill GoChannel that blocks until
// the subscribers ack, which keeps the feed in seq order without making
// Append wait for the subscribers.
type Backend struct {
	cfg    Config
	feed   *gochannel.GoChannel
	queue  chan *message.Message
	stop   chan struct{}
	pumped chan struct{}
	// presence is shared by the Presence views of every instance that uses
	// this backend; it has its own lock.
	presence *presenceRegistry
	// instances holds the instance records; it has its own lock.
	instances *instanceRegistry

	// mu guards the fields below and orders Append: a message gets its seq
	// and is handed to the feed under mu, so delivery order is seq order.
	mu   sync.Mutex
	last pipeline.Seq
	// rooms holds at most MaxRooms room logs, least recently appended to
	// first; see Config.MaxRooms, Config.RoomTTL and Config.MaxBytes for
	// what "full" does. Every room it drops goes through forgot.
	rooms *simplelru.LRU[string, *roomLog]
	// bytes is the sum of the rooms' roomLog.bytes: at most MaxBytes after
	// each Append, unless its message alone is larger (see fit).
	bytes int64
	// epoch is the feed's epoch, set by the first Append.
	epoch string
	// recent is the feed's own log, oldest first, so a subscription can
	// resume after a seq like a Redis one. It keeps every message not yet
	// published and the last RoomMaxLen published (see trimRecent).
	recent []*message.Message
	// recentBytes is the sum of recent's entries' deadLetterSize.
	recentBytes int64
	// unpublished is the number of messages handed to the queue that the
	// pump has not finished publishing: the newest entries of recent. A
	// message is published once every subscriber acked it, so an entry
	// trimmed from recent was read by every subscription open then.
	// The pump counts down without b.mu (so that publishing never waits
	// for an Append); a count read late is higher, which keeps more.
	unpublished atomic.Int64
	// unpublishedBytes is the sum of those messages' deadLetterSize,
	// counted down by the pump like unpublished.
	unpublishedBytes atomic.Int64
	// feedTrimmed is the seq of the newest message dropped from recent.
	feedTrimmed string
	// dead is the dead-letter log, oldest first; deadBytes is the sum of
	// its entries' deadLetterSize.
	dead      []*message.Message
	deadBytes int64
	closed    bool
	// forgetting is why the LRU drops a room now (forgot counts it):
	// forgetMaxRooms unless fit or forgetIdle says otherwise.
	forgetting forgetReason
	// forgotten counts the rooms dropped whole, by reason; dropped the
	// messages dropped from rooms kept to fit MaxBytes.
	forgotten [forgetReasons]int64
	dropped   int64
}

// forgetReason is why a room was dropped whole.
type forgetReason int

// The reasons a room is dropped whole; forgetReasons counts them.
const (
	forgetMaxRooms forgetReason = iota
	forgetMaxBytes
	forgetIdle
	forgetReasons
)

// Stats are the memory backend's counters of what it keeps and what its
// bounds made it drop (Backend.Stats).
type Stats struct {
	// Rooms is the number of rooms kept; Bytes the approximate size of
	// their messages, as MaxBytes counts it.
	Rooms int
	Bytes int64
	// ForgottenMaxRooms, ForgottenMaxBytes and ForgottenIdle count the
	// rooms dropped whole, with their history: by MaxRooms, to fit
	// MaxBytes, and after RoomTTL without a message.
	ForgottenMaxRooms, ForgottenMaxBytes, ForgottenIdle int64
	// DroppedMessages counts the messages dropped from rooms kept, to fit
	// MaxBytes (RoomMaxLen's retention is not counted).
	DroppedMessages int64
}

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forgetIdle(time.Now()) // a quiet instance has idle rooms to forget
	return Stats{
		Rooms: b.rooms.Len(), Bytes: b.bytes,
		ForgottenMaxRooms: b.forgotten[forgetMaxRooms], ForgottenMaxBytes: b.forgotten[forgetMaxBytes],
		ForgottenIdle: b.forgotten[forgetIdle], DroppedMessages: b.dropped,
	}
}

var _ pipeline.Backend = (*Backend)(nil)

const feedTopic = "feed"

// Defaults of Config.
const (
	// DefaultFeedQueue is the default bound of the feed's queue.
	DefaultFeedQueue = 4096
	// DefaultFeedLogBytes is the default size of the published messages
	// the feed's replay log keeps: about 5,000 messages of 2 KiB.
	DefaultFeedLogBytes = 16 << 20
	// DefaultDeadLetterMaxLen is the default number of dead letters kept.
	DefaultDeadLetterMaxLen = 10_000
	// DefaultMaxRooms is the default number of rooms kept.
	DefaultMaxRooms = 10_000
	// DefaultMaxBytes is the default budget of the rooms' messages,
	// 256 MiB: about 540,000 messages of 100 bytes of text (54 in each of
	// DefaultMaxRooms rooms), or 60,000 of the largest
	// (pipeline.DefaultMaxTextBytes); with the feed's log and the
	// connections it leaves a single instance room on a 1 GiB host.
	DefaultMaxBytes = 256 << 20
	// DefaultDeadLetterMaxBytes is the default budget of the dead
	// letters, 16 MiB: all DefaultDeadLetterMaxLen with about 800 bytes
	// of text each, or 3,400 of the largest.
	DefaultDeadLetterMaxBytes = 16 << 20
)

func (c *Config) setDefaults() {
	if c.RoomMaxLen == 0 {
		c.RoomMaxLen = pipeline.DefaultRoomMaxLen
	}
	if c.DeadLetterMaxLen == 0 {
		c.DeadLetterMaxLen = DefaultDeadLetterMaxLen
	}
	if c.DeadLetterMaxBytes == 0 {
		c.DeadLetterMaxBytes = DefaultDeadLetterMaxBytes
	}
	if c.FeedQueue == 0 {
		c.FeedQueue = DefaultFeedQueue
	}
	if c.FeedLogBytes == 0 {
		c.FeedLogBytes = DefaultFeedLogBytes
	}
	if c.MaxRooms == 0 {
		c.MaxRooms = DefaultMaxRooms
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.RoomTTL == 0 {
		c.RoomTTL = pipeline.DefaultRoomTTL
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = pipeline.DefaultIdempotencyWindow
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.RoomMaxLen <= 0, c.DeadLetterMaxLen <= 0, c.FeedQueue <= 0, c.MaxRooms <= 0:
		return errors.New("memstore: limits must be positive")
	case c.MaxBytes <= 0:
		return fmt.Errorf("memstore: max bytes is %d: want a positive budget", c.MaxBytes)
	case c.FeedLogBytes <= 0:
		return fmt.Errorf("memstore: feed log bytes is %d: want a positive budget", c.FeedLogBytes)
	case c.DeadLetterMaxBytes <= 0:
		return fmt.Errorf("memstore: dead letter max bytes is %d: want a positive budget", c.DeadLetterMaxBytes)
	case c.IdempotencyWindow <= 0:
		return errors.New("memstore: idempotency window must be positive")
	}
	return nil
}

// New returns an empty in-memory backend, or an error when cfg, with its
// defaults filled in, cannot work.
func New(cfg Config) (*Backend, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wlog := pipeline.WatermillLogger(cfg.Logger)
	b := &Backend{
		cfg:    cfg,
		queue:  make(chan *message.Message, cfg.FeedQueue),
		stop:   make(chan struct{}),
		pumped: make(chan struct{}),

		presence:  newPresenceRegistry(),
		instances: newInstanceRegistry(),
	}
	rooms, err := simplelru.NewLRU(cfg.MaxRooms, b.forgot)
	if err != nil {
		return nil, fmt.Errorf("memstore: %w", err)
	}
	b.rooms = rooms
	b.feed = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, wlog)
	go b.pump()
	return b, nil
}

// pump publishes queued messages on the feed until Close. Publish returns
// once every subscriber acked the message; only then may recent trim it.
func (b *Backend) pump() {
	defer close(b.pumped)
	for {
		select {
		case m := <-b.queue:
			err := b.feed.Publish(feedTopic, m)
			b.unpublishedBytes.Add(-deadLetterSize(m)) // m is not changed: Publish sends copies
			b.unpublished.Add(-1)
			// Trim what is now published, unless an Append holds the
			// lock: that Append trims it.
			if b.mu.TryLock() {
				b.trimRecent()
				b.mu.Unlock()
			}
			if err != nil {
				return // the feed is closed
			}
		case <-b.stop:
			return
		}
	}
}

// trimRecent drops the oldest entries of recent, keeping every entry not
// yet published and the last RoomMaxLen published, at most FeedLogBytes
// of them. An entry still queued (or being published) has not reached the
// subscriptions: reporting it trimmed would make a reader that is merely
// behind see a gap (and resync its members). The published entries kept
// are the margin of a reader that compares a position read earlier with
// BusState. Trimming waits until recent holds twice what it keeps, in
// entries or in bytes, so each message costs O(1); recent thus holds
// fewer than 2×(RoomMaxLen+FeedQueue+1) entries, and its published ones
// about 2×FeedLogBytes at most. b.mu is held.
func (b *Backend) trimRecent() {
	unpublished := int(b.unpublished.Load())
	keep := b.cfg.RoomMaxLen + unpublished
	over := len(b.recent) - keep
	if over < keep {
		over = 0
	}
	// The published entries' bytes; a count read late is higher, which
	// trims less.
	if left := b.recentBytes - b.unpublishedBytes.Load(); left > 2*b.cfg.FeedLogBytes {
		// The oldest published entries beyond FeedLogBytes go too.
		published := max(len(b.recent)-unpublished, 0)
		for _, m := range b.recent[:over] {
			left -= deadLetterSize(m)
		}
		for over < published && left > b.cfg.FeedLogBytes {
			left -= deadLetterSize(b.recent[over])
			over++
		}
	}
	if over == 0 {
		return
	}
	for _, m := range b.recent[:over] {
		b.recentBytes -= deadLetterSize(m)
	}
	b.feedTrimmed = b.recent[over-1].Metadata.Get(pipeline.MetaSeq)
	b.recent = append(b.recent[:0:0], b.recent[over:]...)
}

// errFeedFull reports a full feed queue; AppendAsync turns it into
// pipeline.ErrOverloaded.
var errFeedFull = fmt.Errorf("feed queue full: %w", pipeline.ErrUnavailable)

// AppendAsync appends msg at once, in the caller's goroutine, and calls
// done with the result before it returns: the memory backend has no round
// trip to overlap.
func (b *Backend) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	a, err := b.Append(context.Background(), msg)
	if errors.Is(err, errFeedFull) {
		return fmt.Errorf("memstore: %w", pipeline.ErrOverloaded)
	}
	done(a, err)
	return nil
}

// Append stores msg and publishes it on the feed, unless the room holds a
// send of the same user and ref within the idempotency window.
func (b *Backend) Append(ctx context.Context, msg *message.Message) (pipeline.Appended, error) {
	if err := ctx.Err(); err != nil {
		return pipeline.Appended{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return pipeline.Appended{}, fmt.Errorf("memstore: %w", pipeline.ErrUnavailable)
	}
	now := time.Now()
	b.forgetIdle(now)
	roomName, user, ref := msg.Metadata.Get(pipeline.MetaRoom), msg.Metadata.Get(pipeline.MetaUser), msg.Metadata.Get(pipeline.MetaRef)
	// Peek: a send that stores nothing (a duplicate, a full queue, a
	// refused message) is no use of the room; see rooms.Add below.
	room, _ := b.rooms.Peek(roomName) // nil for a new (or forgotten) room
	var key []byte
	if ref != "" {
		key = sendKey(make([]byte, 0, 64), user, ref)
		if room != nil {
			if s, ok := room.sent(key, now, b.cfg.IdempotencyWindow); ok {
				return pipeline.Appended{ID: s.id(), Seq: s.seq(), Epoch: room.epoch, Duplicate: true}, nil
			}
		}
	}
	// Only Append (under mu) fills the queue, so a free slot seen here is
	// still free below: a message is stored only if it can be delivered,
	// and nothing blocks while holding mu.
	if len(b.queue) == cap(b.queue) {
		return pipeline.Appended{}, fmt.Errorf("memstore: %w", errFeedFull)
	}
	// The message is converted before anything is stored, so a refused
	// one neither adds a room (which could evict a real one) nor uses a
	// seq.
	if room == nil {
		room = newRoomLog(roomName)
	}
	next := b.following()
	seq := next.String()
	stored := msg.Copy()
	stored.Metadata.Set(pipeline.MetaSeq, seq)
	stored.Metadata.Set(pipeline.MetaEpoch, room.epoch)
	m, err := pipeline.FromWatermill(stored)
	if err != nil {
		return pipeline.Appended{}, fmt.Errorf("memstore: %w", err)
	}
	if n := len(m.ID) + len(m.Seq) + len(m.User) + len(m.Text) + len(m.Ref); uint64(n) > maxEntryBytes {
		return pipeline.Appended{}, fmt.Errorf("memstore: message %s: %d bytes, over the %d a room log keeps", m.ID, n, maxEntryBytes)
	}
	// The message is stored: the room becomes the most recently appended
	// to, before fit picks rooms by that order. Add moves a kept room to
	// the front; it adds a new one, and then a full LRU forgets the room
	// appended to least recently: its history is lost and its next
	// message starts a new epoch.
	b.rooms.Add(roomName, room)
	b.last = next
	if b.epoch == "" {
		b.epoch = pipeline.NewEpoch()
	}
	// What RoomMaxLen drops comes off the total too; then fit takes from
	// the other rooms first.
	b.bytes += room.append(newEntry(m, next), b.cfg.RoomMaxLen, now)
	b.fit(room)
	if ref != "" {
		room.remember(newSentRecord(m.ID, seq, key, now), b.cfg.RoomMaxLen, b.cfg.IdempotencyWindow)
	}
	size := deadLetterSize(stored)
	b.recent = append(b.recent, stored)
	b.recentBytes += size
	b.unpublishedBytes.Add(size)
	b.unpublished.Add(1)
	b.trimRecent()
	b.queue <- stored // never blocks: checked above
	return pipeline.Appended{ID: m.ID, Seq: seq, Epoch: room.epoch}, nil
}

// forgetIdle forgets the rooms idle for longer than RoomTTL. The LRU lists
// rooms by their last message, so only the idle ones are visited.
func (b *Backend) forgetIdle(now time.Time) {
	for {
		_, r, ok := b.rooms.GetOldest()
		if !ok || !b.idle(r, now) {
			return
		}
		b.forget(forgetIdle, func() { b.rooms.RemoveOldest() })
	}
}

// idle reports whether r outlived RoomTTL.
func (b *Backend) idle(r *roomLog, now time.Time) bool {
	return b.cfg.RoomTTL > 0 && now.Sub(r.lastAppend) >= b.cfg.RoomTTL
}

// room returns the log of name, nil when there is none or it is idle.
// It does not count as use: only appends keep a room.
func (b *Backend) room(name string, now time.Time) *roomLog {
	r, ok := b.rooms.Peek(name)
	if !ok {
		return nil
	}
	if b.idle(r, now) {
		b.forget(forgetIdle, func() { b.rooms.Remove(name) })
		return nil
	}
	return r
}

// following returns a seq after every earlier one, in the Redis entry ID
// format; it becomes the last one when the caller stores it in b.last.
func (b *Backend) following() pipeline.Seq {
	now := pipeline.Seq{MS: uint64(time.Now().UnixMilli())}
	if b.last.Less(now) {
		return now
	}
	return b.last.Next()
}

// Partitions is 1: one process needs no partitioning.
func (b *Backend) Partitions() int { return 1 }

// Subscribe returns the messages stored after the seq after (from now on
// when after is ""): first those still in the feed's recent log, then live
// ones. The channel closes when ctx is done.
func (b *Backend) Subscribe(ctx context.Context, _ int, after string) (<-chan *message.Message, error) {
	var from pipeline.Seq
	if after != "" {
		s, err := pipeline.ParseSeq(after)
		if err != nil {
			return nil, fmt.Errorf("memstore: %w", err)
		}
		from = s
	}
	b.mu.Lock()
	var replay []*message.Message
	if after != "" {
		for _, m := range b.recent {
			if s, _ := pipeline.ParseSeq(m.Metadata.Get(pipeline.MetaSeq)); from.Less(s) {
				replay = append(replay, m.Copy())
			}
		}
	}
	// Messages up to cursor are replayed or older than the subscription;
	// the queue may still hold some of them, so live ones are filtered.
	cursor := b.last
	live, err := b.feed.Subscribe(ctx, feedTopic)
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("memstore: %w", err)
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for _, m := range replay {
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
		for m := range live {
			if s, _ := pipeline.ParseSeq(m.Metadata.Get(pipeline.MetaSeq)); !cursor.Less(s) {
				m.Ack()
				continue
			}
			select {
			case out <- m: // the consumer acks it, which releases the pump
			case <-ctx.Done():
				m.Ack()
			}
		}
	}()
	return out, nil
}

// BusState returns the feed's epoch (set by the first Append), the seq of
// the last message stored and of the oldest one the feed can replay, and
// the newest one it trimmed. It never reports trimmed a message not yet
// published on the feed, so a subscription that is only behind sees no gap.
func (b *Backend) BusState(context.Context, int) (pipeline.BusState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimRecent() // what the pump could not trim
	st := pipeline.BusState{Epoch: b.epoch, Trimmed: b.feedTrimmed}
	if len(b.recent) > 0 {
		st.Last = b.last.String()
		st.Oldest = b.recent[0].Metadata.Get(pipeline.MetaSeq)
	}
	return st, nil
}

// History returns the room's messages selected by q, and its epoch.
func (b *Backend) History(ctx context.Context, room string, q pipeline.HistoryQuery) (pipeline.HistoryPage, error) {
	if err := ctx.Err(); err != nil {
		return pipeline.HistoryPage{}, err
	}
	var after, before pipeline.Seq
	var err error
	switch {
	case q.After != "":
		after, err = pipeline.ParseSeq(q.After)
	case q.Before != "":
		before, err = pipeline.ParseSeq(q.Before)
	}
	if err != nil {
		return pipeline.HistoryPage{}, fmt.Errorf("memstore: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.room(room, time.Now())
	if r == nil {
		return pipeline.HistoryPage{}, nil
	}
	page := pipeline.HistoryPage{Epoch: r.epoch}
	if q.Limit <= 0 {
		return page, nil
	}
	msgs, trimmed, hasTrimmed := r.msgs, r.trimmed, r.hasTrimmed
	switch {
	case q.After != "":
		i := sort.Search(len(msgs), func(i int) bool { return after.Less(msgs[i].seq) })
		page.Messages = r.messages(msgs[i:min(len(msgs), i+q.Limit)])
		page.Truncated = hasTrimmed && after.Less(trimmed)
		if n := len(page.Messages); n == q.Limit && i+n < len(msgs) {
			page.Next = page.Messages[n-1].Seq
		}
	case q.Before != "":
		i := sort.Search(len(msgs), func(i int) bool { return !msgs[i].seq.Less(before) })
		page.Messages = r.messages(msgs[max(0, i-q.Limit):i])
	default:
		page.Messages = r.messages(msgs[max(0, len(msgs)-q.Limit):])
	}
	return page, nil
}

// DeadLetter keeps msg in the dead-letter list, dropping the oldest
// entries beyond DeadLetterMaxLen or DeadLetterMaxBytes.
func (b *Backend) DeadLetter(_ context.Context, msg *message.Message) error {
	m := msg.Copy()
	size := deadLetterSize(m)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead = append(b.dead, m)
	b.deadBytes += size
	n := 0
	for len(b.dead)-n > 1 && (len(b.dead)-n > b.cfg.DeadLetterMaxLen || b.deadBytes > b.cfg.DeadLetterMaxBytes) {
		b.deadBytes -= deadLetterSize(b.dead[n])
		b.dead[n] = nil // collectable now; the next growth of dead drops the slot
		n++
	}
	b.dead = b.dead[n:]
	return nil
}

// DeadLetters returns copies of the kept dead letters, oldest first.
func (b *Backend) DeadLetters() []*message.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*message.Message, len(b.dead))
	for i, m := range b.dead {
		out[i] = m.Copy()
	}
	return out
}

// Ping always succeeds while the backend is open.
func (b *Backend) Ping(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return pipeline.ErrUnavailable
	}
	return nil
}

// Close stops the feed; later Appends fail.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	err := b.feed.Close() // also releases a pump blocked in Publish
	<-b.pumped
	if err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	return nil
}
