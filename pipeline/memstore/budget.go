package memstore

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
)

// Fixed costs of an entry besides its strings, for the byte budgets
// (Config.MaxBytes, Config.DeadLetterMaxBytes). They are estimates, not
// measurements of each entry: a budget bounds memory approximately.
const (
	// entryOverhead is a stored message's cost besides its strings: its
	// entry in the room's log (72 bytes on 64-bit platforms) and the
	// log's spare capacity (usually less than a slot per message, at most
	// three: see roomLog.drop), the allocator's rounding of its string,
	// and the idempotency record of its send (about 230 bytes when it has
	// a ref). Measured by BenchmarkCollectHistory: text + about 155 bytes
	// per message without a ref, text + about 385 with one; entrySize
	// counts text + about 400 (304, a UUID, a seq, an epoch, short room
	// and user names).
	entryOverhead = 304
	// deadLetterOverhead is a dead letter's cost besides its strings:
	// its message.Message (with its two channels) and metadata map.
	deadLetterOverhead = 640
)

// entrySize is the approximate memory m costs in a room's log. It
// depends on m alone, so adding it when m is stored and subtracting it
// when m is dropped keeps a total exact.
func entrySize(m pipeline.Message) int64 {
	return int64(entryOverhead + len(m.ID) + len(m.Room) + len(m.Seq) + len(m.User) +
		len(m.Text) + len(m.Ref) + len(m.Epoch))
}

// deadLetterSize is the approximate memory m costs in the dead-letter
// log. The log keeps a copy nobody changes, so the size stays the same.
func deadLetterSize(m *message.Message) int64 {
	n := deadLetterOverhead + len(m.UUID) + len(m.Payload)
	for k, v := range m.Metadata {
		n += len(k) + len(v)
	}
	return int64(n)
}

// fit brings the rooms' messages within MaxBytes after an append to
// keep, the room most recently appended to. It takes the rooms appended
// to least recently first: one that can free what is over while keeping
// its newest message drops just enough of its oldest messages, as
// RoomMaxLen drops them (it keeps its epoch), and the total fits; one
// that cannot is forgotten whole, as by a full MaxRooms, rather than
// kept empty, and the next one is taken. keep is never forgotten for
// it: once it is the only room left, it drops its oldest messages, all
// but its newest if need be. Each turn forgets a room or ends, so one
// message larger than MaxBytes ends with keep holding it alone. b.mu is
// held.
func (b *Backend) fit(keep *roomLog) {
	for b.bytes > b.cfg.MaxBytes {
		over := b.bytes - b.cfg.MaxBytes
		_, oldest, ok := b.rooms.GetOldest()
		switch {
		case !ok || oldest == keep:
			b.dropOldest(keep, over)
			return
		case oldest.spare() >= over:
			b.dropOldest(oldest, over) // frees at least over
			return
		default:
			b.forget(forgetMaxBytes, func() { b.rooms.RemoveOldest() }) // forgot takes its bytes off the total
		}
	}
}

// dropOldest drops r's oldest messages to free over bytes (see
// roomLog.dropOldest) and counts them. b.mu is held.
func (b *Backend) dropOldest(r *roomLog, over int64) {
	n := len(r.msgs)
	b.bytes -= r.dropOldest(over)
	b.dropped += int64(n - len(r.msgs))
}

// forget runs remove, which drops a room from the LRU, with reason as the
// reason forgot counts (forgetMaxRooms otherwise: an Add that evicts).
// b.mu is held.
func (b *Backend) forget(reason forgetReason, remove func()) {
	b.forgetting = reason
	defer func() { b.forgetting = forgetMaxRooms }()
	remove()
}

// forgot takes a room the LRU drops (by MaxRooms, RoomTTL or MaxBytes)
// off the byte total and counts it by b.forgetting. b.mu is held: the LRU
// is used only under it.
func (b *Backend) forgot(_ string, r *roomLog) {
	b.bytes -= r.bytes
	b.forgotten[b.forgetting]++
}
