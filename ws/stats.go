package ws

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// Observer is told of the gateway's timings; package metrics turns them
// into histograms. Its methods are called from connection and delivery
// goroutines: they must be safe for concurrent use, fast, and must not
// block.
type Observer interface {
	// AckQueued reports the time from reading a send frame to queueing
	// its answer (ack or error) on the socket.
	AckQueued(d time.Duration)
	// DeliveryQueued reports the time from a message's storing (its seq,
	// on the backend's clock) to its queueing on the first local member.
	DeliveryQueued(d time.Duration)
}

// Frame types counted in Stats.FramesReceived besides the protocol's
// client frame types (TypeAuth, TypeJoin, TypeLeave, TypeSend,
// TypeHistory).
const (
	// FrameInvalid is a text frame that is not a frame of the protocol.
	FrameInvalid = "invalid"
	// FrameBinary is a binary frame (refused with bad_frame).
	FrameBinary = "binary"
)

// frameTypes are the frame types counted, in the order of
// hubStats.frames.
var frameTypes = [...]string{TypeAuth, TypeJoin, TypeLeave, TypeSend, TypeHistory, TypePing, FrameInvalid, FrameBinary}

// FrameTypes returns every frame type Stats.FramesReceived counts.
func FrameTypes() []string { return append([]string(nil), frameTypes[:]...) }

// Stats are the gateway's frame counters since the hub was made.
type Stats struct {
	// FramesReceived counts the client frames handled, by type (every
	// FrameTypes entry has one); frames the rate limit discarded are not
	// handled.
	FramesReceived map[string]int64
	// ErrorsSent counts the error frames queued, by code.
	ErrorsSent map[string]int64
	// Deliveries counts the messages queued to local members: one per
	// message and member.
	Deliveries int64
	// Rooms is the number of rooms with a local member.
	Rooms int
}

// hubStats are a hub's counters and observer.
type hubStats struct {
	// obs is set once, before the hub is used (Hub.SetObserver).
	obs Observer

	frames     [len(frameTypes)]atomic.Int64 // indexed like frameTypes
	deliveries atomic.Int64
	// errMu guards errs: the error frames sent, by code (a small set: the
	// protocol's codes).
	errMu sync.Mutex
	errs  map[string]int64
}

// SetObserver makes the hub tell o of its timings. Call it before the hub
// is used; nil (the default) tells nobody.
func (h *Hub) SetObserver(o Observer) { h.stats.obs = o }

// Stats returns the gateway's frame counters.
func (h *Hub) Stats() Stats {
	st := Stats{FramesReceived: make(map[string]int64), ErrorsSent: make(map[string]int64), Deliveries: h.stats.deliveries.Load()}
	for i, t := range frameTypes {
		st.FramesReceived[t] = h.stats.frames[i].Load()
	}
	h.stats.errMu.Lock()
	for code, n := range h.stats.errs {
		st.ErrorsSent[code] = n
	}
	h.stats.errMu.Unlock()
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		st.Rooms += len(s.rooms)
		s.mu.Unlock()
	}
	return st
}

// countFrame counts a client frame of type typ; a type outside
// FrameTypes counts as FrameInvalid.
func (h *Hub) countFrame(typ string) {
	i := slices.Index(frameTypes[:], typ)
	if i < 0 {
		i = slices.Index(frameTypes[:], FrameInvalid)
	}
	h.stats.frames[i].Add(1)
}

// countError counts an error frame with code.
func (h *Hub) countError(code string) {
	h.stats.errMu.Lock()
	if h.stats.errs == nil {
		h.stats.errs = make(map[string]int64)
	}
	h.stats.errs[code]++
	h.stats.errMu.Unlock()
}

// observeAck reports a send answered now whose frame was read at start.
func (h *Hub) observeAck(start time.Time) {
	if h.stats.obs != nil {
		h.stats.obs.AckQueued(time.Since(start))
	}
}

// observeDelivery reports message m queued now.
func (h *Hub) observeDelivery(m pipeline.Message) {
	if h.stats.obs == nil {
		return
	}
	if seq, err := pipeline.ParseSeq(m.Seq); err == nil {
		h.stats.obs.DeliveryQueued(time.Since(time.UnixMilli(int64(seq.MS))))
	}
}

// sendError queues an error frame for e and counts it.
func (c *Conn) sendError(e *pipeline.Error, ref, room string) {
	c.gw.hub.countError(e.Code)
	c.enqueue(errFrame(e, ref, room))
}
