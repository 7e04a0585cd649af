package ws

import (
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/chatstream/chatstream/pipeline"
)

// hubShards is the number of independently locked room shards.
const hubShards = 32

// Hub tracks which local connections are in which rooms and delivers stored
// messages to them. It implements pipeline.Deliverer. All methods are safe for concurrent use and never block
// on a socket.
type Hub struct {
	log        *slog.Logger
	maxPending int
	shards     [hubShards]roomShard

	// connsMu guards conns.
	connsMu sync.RWMutex
	conns   map[string]*Conn

	// slow and floods count connections closed with 1008 for a full send
	// queue and for flooding; peakQueued is the most bytes one
	// connection's send queue has held.
	slow       atomic.Int64
	floods     atomic.Int64
	peakQueued atomic.Int64

	// stats are the frame counters and the observer (stats.go).
	stats hubStats

	// presMu guards presence: the users of each room with local members,
	// as last published.
	presMu   sync.Mutex
	presence map[string][]string
}

type roomShard struct {
	// mu guards rooms and every member in it.
	mu    sync.Mutex
	rooms map[string]map[*Conn]*member
}

// member is one connection's membership in one room.
type member struct {
	// ready is false while the join reads history; live messages wait in
	// pending until the history has been queued.
	ready   bool
	pending []pipeline.Message
	// pendingBytes is about the encoded size of pending; it is bounded
	// by the connection's SendQueueBytes, the queue they are bound for.
	pendingBytes int
	// last is the highest seq queued to the connection; older or equal
	// seqs are duplicates and dropped.
	last pipeline.Seq
}

var _ pipeline.Deliverer = (*Hub)(nil)

// DefaultMaxPending is the default bound of live messages held for one
// joining member.
const DefaultMaxPending = 4096

// NewHub returns an empty hub. maxPending bounds the live messages held for
// one joining member while its history is read (a member that overflows it
// is disconnected as too slow); 0 means DefaultMaxPending.
func NewHub(log *slog.Logger, maxPending int) *Hub {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	h := &Hub{log: log, maxPending: maxPending, conns: make(map[string]*Conn)}
	for i := range h.shards {
		h.shards[i].rooms = make(map[string]map[*Conn]*member)
	}
	return h
}

func (h *Hub) shard(room string) *roomShard {
	f := fnv.New32a()
	_, _ = f.Write([]byte(room)) // hash writes never fail
	return &h.shards[f.Sum32()%hubShards]
}

// SlowDisconnects is the number of connections dropped because their send
// queue was full, in frames or in bytes.
func (h *Hub) SlowDisconnects() int64 { return h.slow.Load() }

// FloodDisconnects is the number of connections dropped for sending far
// more frames than their rate (Config.FloodFactor).
func (h *Hub) FloodDisconnects() int64 { return h.floods.Load() }

// QueuedBytes is the number of bytes of server frames waiting in the send
// queues of all open connections.
func (h *Hub) QueuedBytes() int64 {
	var n int64
	for _, c := range h.allConns() {
		n += c.queued.Load()
	}
	return n
}

// MaxQueuedBytes is the most bytes one connection's send queue has held
// since the hub was made; it never exceeds Config.SendQueueBytes.
func (h *Hub) MaxQueuedBytes() int64 { return h.peakQueued.Load() }

// notePeak records that a send queue holds n bytes.
func (h *Hub) notePeak(n int64) {
	for {
		peak := h.peakQueued.Load()
		if n <= peak || h.peakQueued.CompareAndSwap(peak, n) {
			return
		}
	}
}

// Conns is the number of open connections.
func (h *Hub) Conns() int {
	h.connsMu.RLock()
	defer h.connsMu.RUnlock()
	return len(h.conns)
}

func (h *Hub) addConn(c *Conn) {
	h.connsMu.Lock()
	h.conns[c.id] = c
	h.connsMu.Unlock()
}

func (h *Hub) removeConn(c *Conn, rooms []string) {
	h.connsMu.Lock()
	delete(h.conns, c.id)
	h.connsMu.Unlock()
	for _, r := range rooms {
		h.leave(c, r)
	}
}

func (h *Hub) allConns() []*Conn {
	h.connsMu.RLock()
	defer h.connsMu.RUnlock()
	out := make([]*Conn, 0, len(h.conns))
	for _, c := range h.conns {
		out = append(out, c)
	}
	return out
}

// beginJoin registers c in room for live delivery before its history is
// read; messages that arrive meanwhile wait in the member's pending list.
func (h *Hub) beginJoin(c *Conn, room string) {
	s := h.shard(room)
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[room]
	if members == nil {
		members = make(map[*Conn]*member)
		s.rooms[room] = members
	}
	members[c] = &member{}
}

// finishJoin queues the joined frame (built by frame from the history whose
// newest seq is last) and then every pending live message newer than last,
// and switches the member to live delivery.
func (h *Hub) finishJoin(c *Conn, room string, last pipeline.Seq, joined []byte) {
	s := h.shard(room)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.rooms[room][c]
	if m == nil {
		return // left or disconnected meanwhile
	}
	m.last = last
	c.enqueue(joined)
	c.enqueue(h.presenceSnapshot(room, c.user))
	for _, p := range m.pending {
		h.queueTo(c, m, p, nil)
	}
	m.pending, m.ready = nil, true
}

// leave removes c from room.
func (h *Hub) leave(c *Conn, room string) {
	s := h.shard(room)
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[room]
	delete(members, c)
	if len(members) == 0 {
		delete(s.rooms, room)
	}
}

// Deliver queues m on every local member of its room, encoded once.
func (h *Hub) Deliver(m pipeline.Message) {
	s := h.shard(m.Room)
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[m.Room]
	if len(members) == 0 {
		return
	}
	var frame []byte // encoded on first use, shared by every member
	for c, mem := range members {
		if !mem.ready {
			size := pendingSize(m)
			if len(mem.pending) >= h.maxPending || mem.pendingBytes+size > c.gw.cfg.SendQueueBytes {
				c.kickSlow()
				continue
			}
			mem.pending = append(mem.pending, m)
			mem.pendingBytes += size
			continue
		}
		frame = h.queueTo(c, mem, m, frame)
	}
}

// pendingSize is about the size of m's message frame: its strings, twice
// the text (JSON escapes at most double a valid text), and the field names.
func pendingSize(m pipeline.Message) int {
	const fields = 128
	return fields + 2*len(m.Text) + len(m.Room) + len(m.ID) + len(m.Seq) + len(m.User) + len(m.Ref)
}

// queueTo queues m to c unless c already has it or is closing after a
// resync; frame is m's encoding or nil.
// It returns the encoding for reuse.
func (h *Hub) queueTo(c *Conn, mem *member, m pipeline.Message, frame []byte) []byte {
	if c.resyncing.Load() { // closing after a gap: nothing more is delivered
		return frame
	}
	seq, err := pipeline.ParseSeq(m.Seq)
	if err != nil || !mem.last.Less(seq) {
		return frame
	}
	mem.last = seq
	if frame == nil {
		frame = encode(toWire(m))
		h.observeDelivery(m) // the first member it is queued to
	}
	c.enqueue(frame)
	h.stats.deliveries.Add(1)
	return frame
}

// Resync closes, with 1012 and a reason, every connection that is a member
// of a room for which match is true, so its client reconnects and resumes
// each room from its last seq. It returns how many it closed. It is used
// when this instance's feed lost messages of those rooms. Nothing is
// delivered to those connections once it returns (a message after the gap
// would make the client resume after it); each stops reading, answers the
// sends it read, and then closes (Conn.resync).
func (h *Hub) Resync(match func(room string) bool) int {
	var victims []*Conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for room, members := range s.rooms {
			if match(room) {
				for c := range members {
					// Marked under the room's lock: a Deliver of the
					// room after this sees the mark (queueTo).
					if c.markResync() {
						victims = append(victims, c)
					}
				}
			}
		}
		s.mu.Unlock()
	}
	for _, c := range victims {
		c.resync()
	}
	return len(victims)
}

// CloseResync is the close code of Hub.Resync (1012, "service restart"):
// the client should reconnect and resume every room with since.
const CloseResync = 1012

// resyncReason is the reason of a CloseResync.
const resyncReason = "resync: reconnect and resume"
