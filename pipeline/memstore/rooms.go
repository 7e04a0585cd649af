package memstore

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// roomLog is one room's stored messages, its epoch and the sends it
// remembers for idempotency. The Backend's mu guards it.
type roomLog struct {
	// name is the room's name, and epoch is set when the log is created:
	// a room forgotten (evicted or idle) and written again is a new log
	// with a new epoch. Every message of the log has both.
	name, epoch string
	// lastAppend is the time of the last message, for RoomTTL.
	lastAppend time.Time

	msgs []entry // oldest first, at most RoomMaxLen
	// dead is the number of emptied slots before msgs in its array, left
	// by the messages dropped since the array was allocated: the array
	// holds dead+cap(msgs) messages.
	dead int
	// bytes is the sum of the size of msgs.
	bytes int64
	// trimmed is the seq of the newest message dropped by a cap
	// (RoomMaxLen or MaxBytes).
	trimmed    pipeline.Seq
	hasTrimmed bool

	// sends maps a send's key (see sendKey) to the message stored for it;
	// order lists the records oldest first (with stale entries for keys
	// recorded again), from head on, so expiry visits only expired
	// records. Both are bounded by RoomMaxLen records: when full, the
	// oldest record is forgotten before its window ends (a retry of that
	// send would be stored again).
	sends map[string]sentRecord
	order []orderEntry
	head  int
}

// entry is a message as a room log keeps it. Its ID, seq, user, text and
// ref are one string, so that the garbage collector finds one object per
// message rather than one per field: a log holds up to RoomMaxLen of
// them, and every collection marks them all (BenchmarkCollectHistory).
// Its room and epoch are the log's.
type entry struct {
	s string
	// ends are where the ID, the seq, the user and the text end in s; the
	// ref is the rest.
	ends [4]uint32
	// seq is the seq parsed, for History's search.
	seq pipeline.Seq
	ts  time.Time
}

// maxEntryBytes bounds the sum of the lengths of an entry's fields, so
// that their ends fit its uint32 offsets.
const maxEntryBytes uint64 = math.MaxUint32

// newEntry returns m as a log keeps it, with seq its seq parsed. m is a
// message of the log that keeps it: its room and epoch are the log's and
// are not kept. Its fields are at most maxEntryBytes in all.
func newEntry(m pipeline.Message, seq pipeline.Seq) entry {
	e := entry{s: m.ID + m.Seq + m.User + m.Text + m.Ref, seq: seq, ts: m.TS}
	end := 0
	for i, n := range [4]int{len(m.ID), len(m.Seq), len(m.User), len(m.Text)} {
		end += n
		e.ends[i] = uint32(end)
	}
	return e
}

// message returns e as a message of r.
func (r *roomLog) message(e entry) pipeline.Message {
	return pipeline.Message{
		ID: e.s[:e.ends[0]], Seq: e.s[e.ends[0]:e.ends[1]], User: e.s[e.ends[1]:e.ends[2]],
		Text: e.s[e.ends[2]:e.ends[3]], Ref: e.s[e.ends[3]:], TS: e.ts,
		Room: r.name, Epoch: r.epoch,
	}
}

// messages returns es, entries of r, as messages.
func (r *roomLog) messages(es []entry) []pipeline.Message {
	if len(es) == 0 {
		return nil
	}
	ms := make([]pipeline.Message, len(es))
	for i, e := range es {
		ms[i] = r.message(e)
	}
	return ms
}

// size is what e costs in the byte budget: entrySize of its message.
func (r *roomLog) size(e entry) int64 {
	return int64(entryOverhead + len(e.s) + len(r.name) + len(r.epoch))
}

// sendKey returns the key of the send of user and ref in a log's sends,
// appended to buf: the user's length, the user and the ref, so that no
// two sends share a key whatever bytes the names hold.
func sendKey(buf []byte, user, ref string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(user)))
	return append(append(buf, user...), ref...)
}

// sentRecord is the message stored for a send, and when. Its ID, seq and
// key are one string (one object for the collector); the log's sends map
// is keyed by key(), the tail of s.
type sentRecord struct {
	s             string
	idEnd, seqEnd uint32
	at            time.Time
}

// newSentRecord returns the record of the message id, seq stored for the
// send of key at at.
func newSentRecord(id, seq string, key []byte, at time.Time) sentRecord {
	return sentRecord{s: id + seq + string(key), idEnd: uint32(len(id)), seqEnd: uint32(len(id) + len(seq)), at: at}
}

func (s sentRecord) id() string  { return s.s[:s.idEnd] }
func (s sentRecord) seq() string { return s.s[s.idEnd:s.seqEnd] }
func (s sentRecord) key() string { return s.s[s.seqEnd:] }

type orderEntry struct {
	key string
	at  time.Time
}

func newRoomLog(name string) *roomLog {
	return &roomLog{name: name, epoch: pipeline.NewEpoch(), sends: make(map[string]sentRecord)}
}

// append adds m and drops the oldest message when the log then holds
// more than maxLen, so that a room neither keeps nor counts against
// MaxBytes a message History cannot return. It returns by how much
// r.bytes changed.
func (r *roomLog) append(m entry, maxLen int, now time.Time) int64 {
	r.lastAppend = now
	if len(r.msgs) == cap(r.msgs) {
		r.dead = 0 // append moves msgs to a new array
	}
	r.msgs = append(r.msgs, m)
	added := r.size(m)
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
		freed += r.size(r.msgs[n])
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
	return r.bytes - r.size(r.msgs[len(r.msgs)-1])
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
		freed += r.size(m)
	}
	r.trimmed = r.msgs[n-1].seq
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

// sent returns the message stored for the send of key within window
// before now.
func (r *roomLog) sent(key []byte, now time.Time, window time.Duration) (sentRecord, bool) {
	s, ok := r.sends[string(key)]
	if !ok || now.Sub(s.at) >= window {
		return sentRecord{}, false
	}
	return s, true
}

// remember records s, first forgetting the records older than window and,
// when maxLen records are kept, the oldest.
func (r *roomLog) remember(s sentRecord, maxLen int, window time.Duration) {
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
	k := s.key()
	r.sends[k] = s
	r.order = append(r.order, orderEntry{key: k, at: s.at})
}
