package memstore

import (
	"slices"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// roomLog is one room's stored messages, its epoch and the sends it
// remembers for idempotency. The Backend's mu guards it.
type roomLog struct {
	// epoch is set when the log is created: a room forgotten (evicted or
	// idle) and written again is a new log with a new epoch.
	epoch string
	// lastAppend is the time of the last message, for RoomTTL.
	lastAppend time.Time

	msgs []pipeline.Message // oldest first, at most RoomMaxLen
	// dead is the number of emptied slots before msgs in its array, left
	// by the messages dropped since the array was allocated: the array
	// holds dead+cap(msgs) messages.
	dead int
	// bytes is the sum of the entrySize of msgs.
	bytes int64
	// trimmed is the seq of the newest message dropped by a cap
	// (RoomMaxLen or MaxBytes).
	trimmed    pipeline.Seq
	hasTrimmed bool

	// sends maps (user, ref) to the message stored for it; order lists
	// the records oldest first (with stale entries for keys recorded again),
	// from head on, so expiry visits only expired records. Both are bounded
	// by RoomMaxLen records: when full, the oldest record is forgotten
	// before its window ends (a retry of that send would be stored again).
	sends map[sendKey]sentRecord
	order []orderEntry
	head  int
}

// sendKey identifies a send within its room.
type sendKey struct{ user, ref string }

// sentRecord is the message stored for a send, and when.
type sentRecord struct {
	id, seq string
	at      time.Time
}

type orderEntry struct {
	key sendKey
	at  time.Time
}

func newRoomLog() *roomLog {
	return &roomLog{epoch: pipeline.NewEpoch(), sends: make(map[sendKey]sentRecord)}
}

// append adds m and drops the oldest message when the log then holds
// more than maxLen, so that a room neither keeps nor counts against
// MaxBytes a message History cannot return. It returns by how much
// r.bytes changed.
func (r *roomLog) append(m pipeline.Message, maxLen int, now time.Time) int64 {
	r.lastAppend = now
	if len(r.msgs) == cap(r.msgs) {
		r.dead = 0 // append moves msgs to a new array
	}
	r.msgs = append(r.msgs, m)
	added := entrySize(m)
	r.bytes += added
	if over := len(r.msgs) - maxLen; over > 0 {
		return added - r.drop(over)
	}
	return added
}

// dropOldest drops the oldest messages, as few as free at least over
// bytes, and returns the bytes freed. It keeps the newest message
// whatever its size, so it frees less than over (nothing, from a log of
// one message) when freeing over would take the newest too; spare tells
// how much it can free.
func (r *roomLog) dropOldest(over int64) int64 {
	var freed int64
	n := 0
	for freed < over && n < len(r.msgs)-1 {
		freed += entrySize(r.msgs[n])
		n++
	}
	if n == 0 {
		return 0
	}
	return r.drop(n)
}

// spare returns the bytes the log can free keeping its newest message.
func (r *roomLog) spare() int64 {
	if len(r.msgs) == 0 {
		return 0
	}
	return r.bytes - entrySize(r.msgs[len(r.msgs)-1])
}

// drop drops the n oldest messages, 0 < n < len(r.msgs), and returns the
// bytes freed; the newest of them becomes r.trimmed, as History reports
// it. Their slots are emptied, so that their strings can be collected,
// and sliced off rather than copied, so that dropping a message per
// append costs O(1): the next append that outgrows the array moves the
// log to a new one without them. A log left holding less than a quarter
// of its array (one that appends to other rooms made drop most of its
// messages: see Backend.fit) moves to a new array at once, as the room
// may not be appended to again: the array stays at most four times what
// the log holds, and the copy costs less than the drops that led to it.
func (r *roomLog) drop(n int) int64 {
	var freed int64
	for _, m := range r.msgs[:n] {
		freed += entrySize(m)
	}
	r.trimmed, _ = pipeline.ParseSeq(r.msgs[n-1].Seq)
	r.hasTrimmed = true
	clear(r.msgs[:n])
	r.msgs = r.msgs[n:]
	r.dead += n
	r.bytes -= freed
	if len(r.msgs) < (r.dead+cap(r.msgs))/4 {
		r.msgs = slices.Clone(r.msgs)
		r.dead = 0
	}
	return freed
}

// sent returns the message stored for k within window before now.
func (r *roomLog) sent(k sendKey, now time.Time, window time.Duration) (sentRecord, bool) {
	s, ok := r.sends[k]
	if !ok || now.Sub(s.at) >= window {
		return sentRecord{}, false
	}
	return s, true
}

// remember records s for k, first forgetting the records older than
// window and, when maxLen records are kept, the oldest.
func (r *roomLog) remember(k sendKey, s sentRecord, maxLen int, window time.Duration) {
	for r.head < len(r.order) {
		e := r.order[r.head]
		if s.at.Sub(e.at) < window && len(r.order)-r.head < maxLen {
			break
		}
		if cur, ok := r.sends[e.key]; ok && cur.at.Equal(e.at) {
			delete(r.sends, e.key) // not recorded again since
		}
		r.order[r.head] = orderEntry{}
		r.head++
	}
	if r.head > len(r.order)/2 { // amortised O(1): copy once half is dead
		r.order = append(r.order[:0:0], r.order[r.head:]...)
		r.head = 0
	}
	r.sends[k] = s
	r.order = append(r.order, orderEntry{key: k, at: s.at})
}
