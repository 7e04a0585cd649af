package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Store stores messages. Implementations are safe for concurrent use.
type Store interface {
	// Append stores msg (payload = text, metadata = MetaRoom, MetaUser, ...)
	// at the end of its room's log, makes it available to every Feed
	// subscriber of the room's partition, and returns its id, seq and the
	// room's epoch. Two Appends to one room that do not overlap in time are
	// stored in call order.
	//
	// A send is identified by (MetaUser, MetaRoom, MetaRef): when the room
	// already holds, in its current epoch, a message of the same user and
	// ref stored within the backend's idempotency window, Append stores
	// nothing and returns that message's id and seq with Duplicate set. The
	// check and the store are one atomic step. An empty ref is never
	// deduplicated.
	//
	// When Append returns an error the message may or may not be stored; it
	// was not acknowledged, and appending it again with the same ref stores
	// it at most once.
	Append(ctx context.Context, msg *message.Message) (Appended, error)
	// AppendAsync queues msg to be appended as Append does and returns at
	// once; done is called exactly once with Append's result, possibly
	// before AppendAsync returns and possibly from another goroutine.
	// Messages of one room queued one after another (one call returns
	// before the next begins, from one goroutine or from several taking
	// turns under a lock) are stored in the order queued, so a caller can
	// keep many appends in flight without losing a room's order; messages
	// of different rooms may be stored in another order. When the
	// backend's queue is full it returns ErrOverloaded at once and done is
	// not called: the caller refuses rather than waits.
	AppendAsync(msg *message.Message, done func(Appended, error)) error
}

// Saturation is implemented by a Store that can tell cheaply, without
// queueing anything, that an append to room would be refused now with
// ErrOverloaded (its queue is full). The ingest asks it before a send
// enters the chain, so an overloaded instance refuses the overflow for
// less than it costs to run the chain and be refused by the store.
type Saturation interface {
	Saturated(room string) bool
}

// Appended is the result of a successful Append: what an ack needs.
type Appended struct {
	// ID is the stored message's id: msg.UUID, or for a duplicate the id of
	// the message stored the first time.
	ID string
	// Seq is the stored message's seq (the original's for a duplicate).
	Seq string
	// Epoch is the room's epoch when the message was stored (see
	// HistoryPage.Epoch).
	Epoch string
	// Duplicate reports that the send was already stored: nothing was
	// stored or delivered again.
	Duplicate bool
}

// Feed delivers stored messages. Implementations are safe for concurrent use.
type Feed interface {
	// Partitions is the number of partitions rooms are spread over; every
	// room belongs to PartitionOf(room, Partitions()).
	Partitions() int
	// Subscribe returns the messages of partition p stored after the seq
	// after ("" means from now on), in seq order. The backend closes the
	// channel when ctx is done or when the subscription fails; the caller
	// acks every message and subscribes again from the last seq it handled.
	Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error)
}

// HistoryQuery selects messages of one room. One of the modes applies:
// After (messages after a seq, oldest first), else Before (up to Limit
// messages before a seq), else neither (the last Limit messages).
//
// Every backend answers odd queries alike: a seq that is not of the form
// "<ms>-<n>" is an error wrapping ErrBadSeq; an After at or beyond the
// newest message, a Before at or below the oldest ("0-0" included), an
// unknown room and a Limit of 0 or less all give a page without messages
// (with the room's Epoch), never an error.
type HistoryQuery struct {
	// After selects messages with a seq greater than After.
	After string
	// Before selects the Limit messages just before Before.
	Before string
	// Limit caps the number of messages returned; 0 or less returns none
	// (a read of the epoch alone).
	Limit int
}

// HistoryPage is the result of a History read, oldest first.
type HistoryPage struct {
	Messages []Message
	// Next, for an After query whose page was full, is the seq to read the
	// next page after ("" when the end was reached). Undecodable entries
	// may make Messages shorter than the page, so callers page on Next.
	Next string
	// Truncated reports that After is older than the oldest message kept:
	// messages after it were trimmed and are lost.
	Truncated bool
	// Epoch is the room's current epoch, "" when the room has nothing
	// stored. It is an opaque token that changes whenever the room's stored
	// data is lost or reset (Redis restarted empty, the room's keys deleted
	// or expired after RoomTTL, the memory backend evicting the room): seqs
	// of one epoch mean nothing in another, and within one epoch seqs only
	// increase.
	Epoch string
}

// History reads stored messages. Implementations are safe for concurrent use.
type History interface {
	// History returns the messages of room selected by q. An unknown room
	// has no messages.
	History(ctx context.Context, room string, q HistoryQuery) (HistoryPage, error)
}

// DeadLetters records rejected messages with their reason.
type DeadLetters interface {
	// DeadLetter stores msg, whose metadata carries MetaReason, MetaCode and
	// MetaModerator, in the dead-letter log.
	DeadLetter(ctx context.Context, msg *message.Message) error
}

// BusState is what a partition's feed holds now.
type BusState struct {
	// Epoch changes whenever the partition's feed is lost or reset (Redis
	// restarted empty, the bus deleted); "" when nothing was ever stored
	// in it. A reader that saw another epoch must not trust its position.
	Epoch string
	// Last is the seq of the newest entry, "" when the feed holds none. A
	// reader positioned after Last (in the same epoch) was reset too.
	Last string
	// Oldest is the seq of the oldest entry still kept, "" when none.
	Oldest string
	// Trimmed is the seq of the newest entry removed, "" when none was or
	// the backend does not know (Redis 7 records deletions, not
	// trimming: it reports a deleted entry only while it is newer than
	// Oldest). A reader positioned before it lost the entries between.
	Trimmed string
}

// BusStater reports the state of a partition's feed. Implementations are
// safe for concurrent use.
type BusStater interface {
	// BusState returns the epoch, newest and oldest seq of partition p.
	BusState(ctx context.Context, p int) (BusState, error)
}

// Backend is everything a chatstream instance needs from its storage.
type Backend interface {
	Store
	Feed
	History
	DeadLetters
	Pinger
	BusStater
	// Close releases the backend's connections.
	Close() error
}

// Pinger reports whether a backend can serve. Implementations are safe for
// concurrent use.
type Pinger interface {
	// Ping returns nil when the backend is reachable.
	Ping(ctx context.Context) error
}

// Defaults shared by every backend, also used by the command line's flags.
const (
	// DefaultRoomMaxLen is the default number of messages kept per room.
	DefaultRoomMaxLen = 10_000
	// DefaultRoomTTL is how long a room's stored data outlives its last
	// message by default. A room idle for longer is forgotten: its history
	// is gone and its next message starts a new epoch.
	DefaultRoomTTL = 30 * 24 * time.Hour
	// NoRoomTTL, as a RoomTTL, keeps rooms however long they stay idle.
	NoRoomTTL time.Duration = -1
	// DefaultIdempotencyWindow is how long by default a send's (user,
	// room, ref) is remembered, so that a retry returns the message stored
	// the first time instead of storing it again.
	DefaultIdempotencyWindow = 10 * time.Minute
)

// ErrUnavailable reports that the backend could not be reached.
var ErrUnavailable = errors.New("backend unavailable")

// ErrOverloaded reports a backend whose queue of appends is full: the
// message was not queued, and a sender should retry shortly. It wraps
// ErrUnavailable.
var ErrOverloaded = fmt.Errorf("%w: overloaded", ErrUnavailable)

// NewEpoch returns a fresh epoch token: the time in milliseconds (base 36)
// and 48 random bits, e.g. "mb3k2x1f.3fa29c0d11e4". Backends use it for a
// room or feed whose stored data starts anew; nothing parses it.
func NewEpoch() string {
	const hex = "0123456789abcdef"
	var buf [32]byte
	b := strconv.AppendInt(buf[:0], time.Now().UnixMilli(), 36)
	b = append(b, '.')
	r := rand.Uint64()
	for shift := 44; shift >= 0; shift -= 4 {
		b = append(b, hex[r>>shift&0xf])
	}
	return string(b)
}

// PartitionOf maps a room to one of n partitions with a stable hash (FNV-1a,
// then MurmurHash3's finaliser so every input bit reaches the low bits).
func PartitionOf(room string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(room)) // hash writes never fail
	return int(mix32(h.Sum32()) % uint32(n))
}

// mix32 is MurmurHash3's 32-bit finaliser.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
