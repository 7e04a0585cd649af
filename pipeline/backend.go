package pipeline

import (
	"context"
	"errors"
	"hash/fnv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Store stores messages. Implementations are safe for concurrent use.
type Store interface {
	// Append stores msg (payload = text, metadata = MetaRoom, MetaUser, ...)
	// at the end of its room's log, makes it available to every Feed
	// subscriber of the room's partition, and returns its seq. Two Appends to
	// one room that do not overlap in time are stored in call order. When
	// Append returns an error the message may or may not be stored; it was
	// not acknowledged.
	Append(ctx context.Context, msg *message.Message) (seq string, err error)
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

// HistoryQuery selects messages of one room. Exactly one of the modes applies:
// After (messages after a seq, oldest first), Before (up to Limit messages
// before a seq) or neither (the last Limit messages).
type HistoryQuery struct {
	// After selects messages with a seq greater than After.
	After string
	// Before selects the Limit messages just before Before.
	Before string
	// Limit caps the number of messages returned (> 0).
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

// Backend is everything a chatstream instance needs from its storage.
type Backend interface {
	Store
	Feed
	History
	DeadLetters
	Pinger
	// Close releases the backend's connections.
	Close() error
}

// Pinger reports whether a backend can serve. Implementations are safe for
// concurrent use.
type Pinger interface {
	// Ping returns nil when the backend is reachable.
	Ping(ctx context.Context) error
}

// DefaultRoomMaxLen is the default number of messages kept per room, in
// every backend.
const DefaultRoomMaxLen = 10_000

// ErrUnavailable reports that the backend could not be reached.
var ErrUnavailable = errors.New("backend unavailable")

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
