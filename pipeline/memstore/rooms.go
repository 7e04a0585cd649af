package memstore

import (
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

	msgs []pipeline.Message // oldest first, at most 2×RoomMaxLen until trimmed
	// trimmed is the seq of the newest message dropped by the cap.
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

// append adds m, keeping at most maxLen messages (amortised: trimming
// waits until the log is twice its cap, so each message costs O(1)
// instead of a copy of the whole log).
func (r *roomLog) append(m pipeline.Message, maxLen int, now time.Time) {
	r.lastAppend = now
	r.msgs = append(r.msgs, m)
	if over := len(r.msgs) - maxLen; over >= maxLen {
		r.trimmed, _ = pipeline.ParseSeq(r.msgs[over-1].Seq)
		r.hasTrimmed = true
		r.msgs = append(r.msgs[:0:0], r.msgs[over:]...)
	}
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
