package ws

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/pipeline"
)

// errShuttingDown ends a read loop from the pong handler during shutdown.
var errShuttingDown = errors.New("ws: shutting down")

// closeGrace is how long the writer waits for the client's close reply
// before it drops the TCP connection.
const closeGrace = time.Second

// Conn is one WebSocket connection. Its reader goroutine reads frames and
// waits while a gateway worker handles each (workers.go), so frames are
// handled one at a time, in order, and own rooms as the reader would. Its
// writer runs only while there is something to write (frames, a ping, the
// close), on a goroutine of the gateway's writer pool: an idle connection
// holds no writer goroutine or timer, and of its queue at most two small
// arrays (see mu). Other goroutines only call enqueue, ping and close.
type Conn struct {
	id   string
	user string
	ws   *websocket.Conn
	gw   *Gateway
	log  *slog.Logger

	// mu guards queue, spare, writing and pingDue. queue holds the
	// encoded server frames waiting for the writer. The writer takes the
	// whole queue's array, and gives it back as spare once written, for
	// the queue to take in turn: frames are queued without allocating.
	// Only arrays of at most keptFrames are kept, so an idle connection
	// holds at most two small ones. queued is the bytes of the frames in
	// queue, at most SendQueueBytes; it is also read without mu.
	mu      sync.Mutex
	queue   [][]byte
	spare   [][]byte
	queued  atomic.Int64
	writing bool
	pingDue bool
	// nextPing is when the gateway's pinger pings next (Unix nanoseconds).
	nextPing atomic.Int64
	// writeSince is the gateway's clock when the batch being written
	// began, 0 when none is (see writeBatch).
	writeSince atomic.Int64

	// done is closed once, by close, to make the writer finish.
	done      chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
	// resyncing is set by markResync (Hub.Resync): nothing more is
	// delivered, the reader stops, and the connection closes with 1012
	// once the sends it read are answered.
	resyncing atomic.Bool
	// closeCode, closeReason and drain are written once, before done is
	// closed, and read by the writer after.
	closeCode   int
	closeReason string
	drain       bool
	// sendMu guards sends and acking; sendCond is signalled whenever a
	// send is answered. sends are the sends read and not yet answered, in
	// order (nil when none); acking is set while the acker runs.
	sendMu   sync.Mutex
	sendCond *sync.Cond
	sends    []*sendWait
	acking   bool
	// sendBytes is the text bytes of sends: what they hold while they
	// wait (MaxInFlightBytes).
	sendBytes int

	// release gives back what the connection holds outside this package
	// (its admission slot); the writer calls it once the connection ends.
	release func()

	readerDone chan struct{}
	limiter    *rate.Limiter
	// history is the connection's history budget in bytes
	// (Config.HistoryRate). historyLast and historyMean (the bytes of the
	// last reply charged and the running mean of them, see historyReply)
	// and historyRetryAt (the latest time a refusal named) are owned by
	// the reader goroutine.
	history        *rate.Limiter
	historyLast    int
	historyMean    float64
	historyRetryAt time.Time
	// flood, lastLimited (the last rate_limited answer) and rooms are
	// owned by the reader goroutine.
	flood       floodMeter
	lastLimited time.Time
	rooms       map[string]struct{}

	// ident (who the connection is), authed and authBy (the moment to
	// authenticate by) are owned by the reader goroutine (auth.go). user
	// and log are written by it once, when it authenticates, before the
	// connection joins a room.
	ident  auth.Identity
	authed bool
	authBy time.Time
}

// ID returns the connection's id, used as conn_id in message metadata.
func (c *Conn) ID() string { return c.id }

// enqueue queues a server frame without blocking. A connection whose queue
// is full, in frames or in bytes, is too slow to keep up: it is closed with
// 1008 and counted, and the frame is dropped.
func (c *Conn) enqueue(frame []byte) {
	if c.closing.Load() {
		return
	}
	n := int64(len(frame))
	c.mu.Lock()
	cur := c.queued.Load()
	if len(c.queue) >= c.gw.cfg.SendQueue || cur+n > int64(c.gw.cfg.SendQueueBytes) {
		c.mu.Unlock()
		c.kickSlow()
		return
	}
	c.queue = append(c.queue, frame)
	c.queued.Store(cur + n)
	start := c.startWriterLocked()
	c.mu.Unlock()
	c.gw.hub.notePeak(cur + n)
	if start {
		c.gw.writers.start(c)
	}
}

// ping asks the writer to ping the client.
func (c *Conn) ping() {
	c.mu.Lock()
	c.pingDue = true
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		c.gw.writers.start(c)
	}
}

// startWriterLocked reports whether the caller must start the writer
// goroutine, marking it running. c.mu must be held.
func (c *Conn) startWriterLocked() bool {
	if c.writing {
		return false
	}
	c.writing = true
	return true
}

// dropQueue throws the queued frames away and returns how many there were.
func (c *Conn) dropQueue() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.queue)
	c.queue = nil
	c.queued.Store(0)
	return n
}

func (c *Conn) kickSlow() { c.kick(reasonSlow, &c.gw.hub.slow) }

// close asks the writer to send a close frame with code and reason (after
// the queued frames when drain is set) and to drop the connection. Only the
// first call has an effect; it reports whether this call was the first.
func (c *Conn) close(code int, reason string, drain bool) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closeCode, c.closeReason, c.drain = code, reason, drain
		c.closing.Store(true)
		close(c.done)
	})
	if first {
		c.mu.Lock()
		start := c.startWriterLocked()
		c.mu.Unlock()
		if start {
			c.gw.writers.start(c)
		}
	}
	return first
}

// markResync marks the connection as closing after a resync (Hub.Resync)
// and reports whether this call did, on a connection not closing already.
func (c *Conn) markResync() bool {
	return !c.closing.Load() && c.resyncing.CompareAndSwap(false, true)
}

// resync stops the reader of a connection markResync marked (its read
// deadline becomes now), so that it leaves its rooms and closes with
// CloseResync once the sends it read are answered (readEnded).
func (c *Conn) resync() {
	// On the net.Conn, as Shutdown does: gorilla leaves SetReadDeadline to
	// the reader.
	_ = c.ws.NetConn().SetReadDeadline(time.Now()) // a failure means the connection is ending anyway
}

// writer writes what is queued, then returns; once the connection is
// closing it finishes it instead, and stays marked running so that no
// other writer starts.
func (c *Conn) writer() {
	var written [][]byte // the array of the batch written last
	for {
		// A close request goes first: a slow client's queue is not
		// worth writing.
		select {
		case <-c.done:
			c.finish()
			return
		default:
		}
		c.mu.Lock()
		if written != nil && c.spare == nil {
			c.spare = keepSmall(written)
		}
		written = nil
		ping := c.pingDue
		c.pingDue = false
		var batch [][]byte
		if !ping {
			batch = c.takeLocked()
			if batch == nil && c.closing.Load() {
				// close ran after the check above and saw this writer
				// running, so it started none: finish here.
				c.mu.Unlock()
				c.finish()
				return
			}
			if batch == nil {
				c.writing = false
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		var err error
		if ping {
			err = c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.gw.cfg.WriteWait))
		} else {
			err = c.writeBatch(batch)
			clear(batch) // written: the frames are not kept alive
			written = batch
		}
		if err != nil {
			c.close(websocket.CloseAbnormalClosure, "", false)
		}
	}
}

// keptFrames is the largest queue array a connection keeps for reuse;
// a larger one (a burst) is dropped once empty.
const keptFrames = 8

// keepSmall returns q emptied for reuse, or nil when its array is larger
// than keptFrames.
func keepSmall(q [][]byte) [][]byte {
	if cap(q) > keptFrames {
		return nil
	}
	return q[:0]
}

// takeLocked takes the frames at the head of the queue that fit in one
// batch (MaxBatchBytes, and at least one frame), or returns nil when the
// queue is empty. c.mu must be held.
func (c *Conn) takeLocked() [][]byte {
	if len(c.queue) == 0 {
		c.queue = keepSmall(c.queue)
		return nil
	}
	k, size := 1, len(c.queue[0])
	for k < len(c.queue) && size+len(c.queue[k])+1 <= c.gw.cfg.MaxBatchBytes {
		size += len(c.queue[k]) + 1
		k++
	}
	var batch [][]byte
	if k == len(c.queue) {
		// The whole queue: the writer takes its array, and frames
		// queue in the spare one meanwhile.
		batch, c.queue, c.spare = c.queue, c.spare, nil
	} else {
		batch = slices.Clone(c.queue[:k])
		clear(c.queue[:k])
		c.queue = c.queue[k:]
	}
	c.queued.Add(-int64(size - (k - 1)))
	return batch
}

// finish drains the queue if asked, sends the close frame, waits briefly
// for the reader to see the client's reply, drops the TCP connection and
// ends the connection's life in the gateway.
func (c *Conn) finish() {
	defer c.gw.conns.Done()
	defer c.release()
	defer c.gw.forget(c)
	cfg := &c.gw.cfg
	if c.drain {
		for {
			c.mu.Lock()
			batch := c.takeLocked()
			c.mu.Unlock()
			if batch == nil || c.writeBatch(batch) != nil {
				break
			}
		}
	}
	c.dropQueue()
	if c.closeCode != websocket.CloseAbnormalClosure {
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cfg.WriteWait)) // best effort: the peer may be gone
	}
	select {
	case <-c.readerDone:
	case <-time.After(closeGrace):
	}
	_ = c.ws.Close() // the connection is finished either way
	<-c.readerDone
}

// writeBatch writes the frames of batch as one text message, separated by
// newlines. It sets no write deadline, which the socket would arm anew for
// every message: it stamps the batch with the gateway's clock, and the
// gateway's pinger cuts a write that lasts longer than WriteWait. A
// batch of one frame is written with WriteMessage, which (with compression
// off, as here) allocates nothing, where NextWriter allocates its writer.
func (c *Conn) writeBatch(batch [][]byte) error {
	c.writeSince.Store(c.gw.clock.Load())
	defer c.writeSince.Store(0)
	if len(batch) == 1 {
		return c.ws.WriteMessage(websocket.TextMessage, batch[0])
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	for i, frame := range batch {
		if i > 0 {
			if _, err := w.Write(newline); err != nil {
				return err
			}
		}
		if _, err := w.Write(frame); err != nil {
			return err
		}
	}
	return w.Close()
}

var newline = []byte{'\n'}

// reader reads and handles client frames until the connection ends. Every
// frame, pings and pongs included, first passes the limiter (admit); one it
// refuses, and every frame once the connection is closing, is discarded
// without being read into memory or decoded.
func (c *Conn) reader() {
	cfg := &c.gw.cfg
	defer close(c.readerDone)
	c.ws.SetReadLimit(cfg.ReadLimit)
	extend := c.extendDeadline
	_ = extend() // cannot fail before the first read
	// partial is set while the frames of a message are read: a ping or
	// pong between them does not extend the deadline, so a message must
	// be complete within PongWait of its start, and a client cannot keep
	// a partly sent message (and its buffer) open by pinging. The
	// handlers run in this goroutine, within the reads.
	partial := false
	c.ws.SetPongHandler(func(string) error {
		if c.gw.shutting.Load() {
			return errShuttingDown // ends the read loop
		}
		if c.closing.Load() || !c.admit() || partial {
			return nil
		}
		return extend()
	})
	pong := c.ws.PingHandler()
	c.ws.SetPingHandler(func(data string) error {
		if c.closing.Load() || !c.admit() {
			return nil // no pong for a ping over the limit
		}
		if !partial {
			_ = extend() // an error here surfaces on the next read
		}
		return pong(data)
	})
	for {
		kind, r, err := c.ws.NextReader()
		if err != nil {
			c.readEnded(err)
			break
		}
		// Extend first, then check: a Shutdown or a resync that set the
		// deadline to now in between is then seen here, not undone. (A
		// read parked when the deadline passed can still return data
		// that arrived before it ran, so the check is needed either way.)
		_ = extend() // an error here surfaces on the next read
		if c.gw.shutting.Load() || c.resyncing.Load() {
			c.readEnded(nil)
			break
		}
		partial = true
		if c.closing.Load() || !c.admit() {
			_, err := io.Copy(io.Discard, r)
			partial = false
			if err != nil {
				c.readEnded(err)
				break
			}
			continue
		}
		buf := frameBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(r)
		partial = false
		if err != nil {
			putFrameBuf(buf)
			c.readEnded(err)
			break
		}
		if kind != websocket.TextMessage {
			putFrameBuf(buf)
			c.gw.hub.countFrame(FrameBinary)
			c.awaitSends() // answers leave in the order of the frames, as in handle
			c.sendError(pipeline.Errorf(CodeBadFrame, "binary frames are not supported; send JSON text frames"), "", "")
			continue
		}
		data := buf.Bytes()
		c.gw.workers.do(func() { c.handle(data) })
		putFrameBuf(buf) // handle keeps nothing of data: DecodeFrame copies what it returns
	}
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.gw.hub.removeConn(c, rooms)
}

// leaveRooms takes the connection out of its rooms' live delivery (the
// reader's removeConn does it again, harmlessly): a connection that is to
// close once its sends are answered gets no more messages meanwhile.
func (c *Conn) leaveRooms() {
	for r := range c.rooms {
		c.gw.hub.leave(c, r)
	}
}

// frameBufs holds the buffers frames are read into, one per frame being
// handled, so that a frame read costs no allocation.
var frameBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledFrameBuf is the largest buffer frameBufs keeps: one grown by a
// rare large frame is dropped rather than held.
const maxPooledFrameBuf = 16 << 10

func putFrameBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledFrameBuf {
		frameBufs.Put(b)
	}
}

// extendDeadline pushes the read deadline out (readDeadline), except
// during Shutdown, which sets every connection's deadline to now: an
// extension that raced with it (a ping, an auth frame being verified) is
// undone, so the reader ends at once instead of after PongWait.
func (c *Conn) extendDeadline() error {
	err := c.ws.SetReadDeadline(c.readDeadline(time.Now()))
	if c.gw.shutting.Load() || c.resyncing.Load() {
		return c.ws.SetReadDeadline(time.Now())
	}
	return err
}

// readEnded closes the connection after the read loop ended with err.
func (c *Conn) readEnded(err error) {
	switch {
	case c.gw.shutting.Load():
		// The sends in flight are answered (the pipeline gives up on
		// them at once) before the queue is flushed and closed.
		c.awaitSends()
		c.close(websocket.CloseGoingAway, "server shutting down", true)
	case c.resyncing.Load():
		c.leaveRooms()
		c.awaitSends()
		c.close(CloseResync, resyncReason, true)
	case c.authTimedOut(err):
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has already sent 1009; this only stops the writer.
		c.close(websocket.CloseMessageTooBig, "frame exceeds the read limit", false)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		c.close(websocket.CloseNormalClosure, "", false)
	default:
		c.log.Debug("read ended", "err", err)
		c.close(websocket.CloseNormalClosure, "", false)
	}
}

// handle runs one text frame.
func (c *Conn) handle(data []byte) {
	f, perr := DecodeFrame(data)
	c.gw.hub.countFrame(f.Type) // FrameInvalid unless a type of the protocol
	if perr != nil || f.Type != TypeSend {
		// Answers leave in the order of the frames: a frame that is not a
		// send is handled once the sends before it are answered.
		c.awaitSends()
	}
	if perr != nil {
		c.sendError(perr, f.Ref, f.Room)
		return
	}
	if f.Type == TypeAuth {
		c.authenticate(f)
		_ = c.extendDeadline() // an error here surfaces on the next read
		return
	}
	if !c.authed {
		c.sendError(pipeline.Errorf(CodeUnauthorized, "authenticate first: send an auth frame with your token"), f.Ref, f.Room)
		return
	}
	if f.Type == TypePing {
		c.enqueue(encode(pongFrame{Type: TypePong, Ref: f.Ref}))
		return
	}
	_, joined := c.rooms[f.Room]
	if !joined && f.Type != TypeJoin {
		c.awaitSends()
		c.sendError(pipeline.Errorf(CodeNotJoined, "join room %s first", f.Room), f.Ref, f.Room)
		return
	}
	switch f.Type {
	case TypeJoin:
		c.join(f, joined)
	case TypeLeave:
		delete(c.rooms, f.Room)
		c.gw.hub.leave(c, f.Room)
		c.enqueue(encode(leftFrame{Type: TypeLeft, Room: f.Room, Ref: f.Ref}))
	case TypeSend:
		if c.allowed(f, auth.Send) {
			c.submit(f)
		} else {
			c.awaitSends()
			c.refuse(f, auth.Send)
		}
	case TypeHistory:
		c.olderHistory(f)
	}
}

// sendWait is a send read from the connection and not yet answered.
type sendWait struct {
	ref, room string
	start     time.Time
	// p is the send in the pipeline; nil when err already answers it.
	p   *pipeline.Pending
	err *pipeline.Error
	// unread marks the answer to a frame that was not read (the frame
	// rate's rate_limited), not to a send: it only keeps its place in
	// the order of the answers.
	unread bool
	// size is the send's text bytes, counted in Conn.sendBytes.
	size int
}

// submit puts a send frame into the pipeline without waiting for the
// store, so that the connection's next sends are read and their appends
// overlap; the acker answers them in the order they were read. At most
// MaxInFlightSends, holding at most MaxInFlightBytes of text (one send of
// any size alone), wait at once: beyond them the reader waits for an
// answer. A store that cannot keep up refuses at once (unavailable, with
// a retry hint) when its queue is full, so an overloaded server answers
// instead of leaving frames unread in the socket; so does a Shedder that
// finds the instance short of CPU, before the send enters the pipeline.
func (c *Conn) submit(f ClientFrame) {
	w := &sendWait{ref: f.Ref, room: f.Room, start: time.Now(), size: len(f.Text)}
	c.sendMu.Lock()
	for len(c.sends) >= c.gw.cfg.MaxInFlightSends ||
		len(c.sends) > 0 && c.sendBytes+w.size > c.gw.cfg.MaxInFlightBytes {
		c.sendCond.Wait()
	}
	c.sendMu.Unlock()
	if c.gw.cfg.Shedder != nil && c.gw.cfg.Shedder.Shed() {
		w.err = errShed
	} else {
		p, err := c.gw.sub.Begin(c.gw.ctx, pipeline.Submission{
			ConnID: c.id, User: c.user, Room: f.Room, Text: f.Text, Ref: f.Ref, Meta: c.ident.Meta,
		})
		if err != nil {
			w.err = pipeline.Errorf(pipeline.CodeUnavailable, "the server cannot take messages right now; try again")
		}
		w.p = p
	}
	c.sendMu.Lock()
	c.sends = append(c.sends, w)
	c.sendBytes += w.size
	start := !c.acking
	c.acking = true
	c.sendMu.Unlock()
	if start {
		c.gw.ackers.start(c)
	}
}

// answerUnread queues e, the answer to a frame discarded unread, after
// the answers to the sends still waiting for the store, so that replies
// keep the order of the frames without the reader waiting for them.
func (c *Conn) answerUnread(e *pipeline.Error) {
	c.sendMu.Lock()
	if len(c.sends) == 0 {
		c.sendMu.Unlock()
		c.sendError(e, "", "")
		return
	}
	c.sends = append(c.sends, &sendWait{err: e, unread: true})
	c.sendMu.Unlock() // the acker runs: it answers the sends ahead
}

// errShed answers a send the Shedder refused.
var errShed = &pipeline.Error{Code: pipeline.CodeUnavailable, Reason: "the server is busy; retry with the same ref", RetryAfter: pipeline.OverloadRetry}

// acker answers the connection's sends in the order they were read, then
// returns once none is left: an idle connection holds no acker.
func (c *Conn) acker() {
	for {
		c.sendMu.Lock()
		if len(c.sends) == 0 {
			c.acking = false
			c.sends = nil
			c.sendCond.Broadcast()
			c.sendMu.Unlock()
			return
		}
		w := c.sends[0]
		c.sendMu.Unlock()
		c.answer(w)
		c.sendMu.Lock()
		c.sends[0] = nil
		c.sends = c.sends[1:]
		c.sendBytes -= w.size
		c.sendCond.Broadcast()
		c.sendMu.Unlock()
	}
}

// answer waits for w's outcome and queues its ack or error.
func (c *Conn) answer(w *sendWait) {
	if w.unread {
		c.sendError(w.err, "", "")
		return
	}
	defer c.gw.hub.observeAck(w.start) // every way out queues an answer
	if w.err != nil && w.p == nil {
		c.sendError(w.err, w.ref, w.room)
		return
	}
	// Not the gateway's context: a send in progress at Shutdown is
	// answered with its outcome while Shutdown waits (Wait has its own
	// bound too), so that a stored message is acked before the
	// connection closes with 1001.
	o, err := w.p.Wait(c.gw.drained)
	switch {
	case err != nil:
		c.sendError(pipeline.Errorf(pipeline.CodeUnavailable, "the server cannot take messages right now; try again"), w.ref, w.room)
	case o.Err != nil:
		c.sendError(o.Err, o.Ref, o.Room)
	default:
		c.enqueue(encode(ackFrame{Type: TypeAck, Ref: o.Ref, Room: o.Room, ID: o.ID, Seq: o.Seq, Epoch: o.Epoch}))
	}
}

// awaitSends returns once every send read so far is answered, so that the
// answer to the frame read next follows theirs.
func (c *Conn) awaitSends() {
	c.sendMu.Lock()
	for len(c.sends) > 0 {
		c.sendCond.Wait()
	}
	c.sendMu.Unlock()
}

// join registers the connection in the room for live delivery, reads the
// history asked for, and queues joined followed by any live message that
// arrived meanwhile and is not in the history.
func (c *Conn) join(f ClientFrame, rejoin bool) {
	if !c.allow(f, auth.Join) {
		return
	}
	if !rejoin && len(c.rooms) >= c.gw.cfg.MaxRooms {
		c.sendError(pipeline.Errorf(CodeRoomLimit, "a connection may join at most %d rooms", c.gw.cfg.MaxRooms), f.Ref, f.Room)
		return
	}
	// Refused here, a rejoin (a join of a room already joined) leaves the
	// membership as it was.
	if !c.historyAllowed(f) {
		return
	}
	c.rooms[f.Room] = struct{}{}
	c.gw.hub.beginJoin(c, f.Room)
	p, truncated, last, reset, err := c.readJoinHistory(f)
	if err != nil {
		delete(c.rooms, f.Room)
		c.gw.hub.leave(c, f.Room)
		c.historyFailed(f.Room, err)
		c.sendError(pipeline.Errorf(pipeline.CodeUnavailable, "history is unavailable; join again"), f.Ref, f.Room)
		return
	}
	c.gw.histFail.OK("")
	if reset {
		c.log.Debug("resume across a loss of the room's data: reset", "room", f.Room, "since", f.Since, "epoch", p.epoch)
	}
	joined := encode(joinedFrame{
		Type: TypeJoined, Room: f.Room, Ref: f.Ref, History: p.msgs, Truncated: truncated, More: p.more,
		Epoch: p.epoch, Reset: reset,
	})
	c.chargeHistory(len(joined))
	c.gw.hub.finishJoin(c, f.Room, last, joined)
}

// maxClockSkew is how far in the future of this instance's clock a since
// may be and still be trusted to mark what the client has seen.
const maxClockSkew = time.Minute

// readJoinHistory reads the page of a join: the newest messages after since,
// or the newest history ones, that fit the page budgets. It returns the page
// (with the room's epoch), whether messages after since were trimmed, the
// seq after which live messages are new, and whether the resume crossed a
// loss of the room's data (reset): then the page is the room's current
// history, as for a join without since.
func (c *Conn) readJoinHistory(f ClientFrame) (page, bool, pipeline.Seq, bool, error) {
	ctx, cancel := context.WithTimeout(c.gw.ctx, c.gw.cfg.HistoryTimeout)
	defer cancel()
	var last pipeline.Seq
	if f.Since != "" {
		since, _ := pipeline.ParseSeq(f.Since) // checked by DecodeFrame
		p, err := c.readPage(ctx, f.Room, pageRange{after: &since, want: math.MaxInt, limit: math.MaxInt})
		if err != nil {
			return p, false, last, false, err
		}
		if resetSince(f, since, p) {
			p, err := c.readPage(ctx, f.Room, pageRange{want: DefaultHistory, limit: DefaultHistory})
			if p.newest != "" {
				last, _ = pipeline.ParseSeq(p.newest) // a stored message's seq
			}
			return p, false, last, true, err
		}
		// Live messages up to since are duplicates of what the client has,
		// even when nothing follows since yet (another instance's feed may
		// still be delivering them here). A since from the future is not
		// trusted for that: it could hide real messages.
		if since.MS <= uint64(time.Now().Add(maxClockSkew).UnixMilli()) {
			last = since
		}
		truncated := false
		if !p.reachedAfter {
			// The page stops above since (more) or at the oldest message
			// kept: only the backend knows whether messages after since
			// were trimmed.
			res, err := c.gw.hist.History(ctx, f.Room, pipeline.HistoryQuery{After: f.Since, Limit: 1})
			if err != nil {
				return p, false, last, false, err
			}
			truncated = res.Truncated
		}
		if p.newest != "" {
			last, _ = pipeline.ParseSeq(p.newest) // a stored message's seq
		}
		return p, truncated, last, false, nil
	}
	n := DefaultHistory
	if f.History != nil {
		n = *f.History
	}
	p, err := c.readPage(ctx, f.Room, pageRange{want: n, limit: n})
	if err != nil {
		return p, false, last, false, err
	}
	if !p.read { // history 0: only the epoch
		res, err := c.gw.hist.History(ctx, f.Room, pipeline.HistoryQuery{Limit: 0})
		if err != nil {
			return p, false, last, false, err
		}
		p.epoch = res.Epoch
	}
	if p.newest != "" {
		last, _ = pipeline.ParseSeq(p.newest) // a stored message's seq
	}
	return p, false, last, false, nil
}

// resetSince reports whether a resume after since (in the client's epoch,
// if it sent one) crossed a loss of the room's data: the room's epoch is
// not the client's, or since is beyond the room's newest message (the room
// is empty, or holds only older seqs: a Redis restarted empty, perhaps with
// its clock behind). p is the page read after since, from the newest. A
// since of 0-0 (from the start) is never a reset.
func resetSince(f ClientFrame, since pipeline.Seq, p page) bool {
	if f.Epoch != "" && f.Epoch != p.epoch {
		return true
	}
	if since == (pipeline.Seq{}) {
		return false
	}
	return p.roomNewest == "" || pipeline.CompareSeq(f.Since, p.roomNewest) > 0
}

// olderHistory answers a history frame: messages before a seq (and after
// one), for scrolling back and for filling a resume's gap.
func (c *Conn) olderHistory(f ClientFrame) {
	if !c.historyAllowed(f) {
		return
	}
	r := pageRange{before: f.Before, want: math.MaxInt, limit: f.Limit}
	if r.limit == 0 {
		r.limit = DefaultHistory
	}
	if f.After != "" {
		after, _ := pipeline.ParseSeq(f.After) // checked by DecodeFrame
		r.after = &after
	}
	ctx, cancel := context.WithTimeout(c.gw.ctx, c.gw.cfg.HistoryTimeout)
	defer cancel()
	p, err := c.readPage(ctx, f.Room, r)
	if err != nil {
		c.historyFailed(f.Room, err)
		c.sendError(pipeline.Errorf(pipeline.CodeUnavailable, "history is unavailable"), f.Ref, f.Room)
		return
	}
	c.gw.histFail.OK("")
	frame := encode(historyFrame{Type: TypeHistory, Room: f.Room, Ref: f.Ref, Messages: p.msgs, More: p.more})
	c.chargeHistory(len(frame))
	c.enqueue(frame)
}

// historyAllowed reports whether f (a join or history frame) may read
// history now. When the connection's history budget is spent it answers f
// with rate_limited and the time until the budget is paid back, and
// returns false.
//
// Refusals of one spell are spread out: each names a time one reply's
// worth of budget (historyReply) after the time the one before it named,
// so that the requests of a client resuming many rooms at once come back
// one after another, each finding the budget paid back, instead of all
// together, where only one is served and the others are refused again. A
// named time is at most a full burst's refill beyond the debt.
func (c *Conn) historyAllowed(f ClientFrame) bool {
	now := time.Now()
	owed := -c.history.TokensAt(now)
	if owed <= 0 {
		return true
	}
	perByte := float64(time.Second) / float64(c.history.Limit())
	wait := time.Duration(owed * perByte)
	if c.historyRetryAt.After(now) {
		queued := c.historyRetryAt.Sub(now) + time.Duration(c.historyReply()*perByte)
		wait = max(wait, min(queued, wait+time.Duration(float64(c.history.Burst())*perByte)))
	}
	wait = wait.Truncate(time.Millisecond) + time.Millisecond
	c.historyRetryAt = now.Add(wait)
	e := pipeline.Errorf(pipeline.CodeRateLimited, "too much history too fast: ask again in %s", wait)
	e.RetryAfter = wait
	c.sendError(e, f.Ref, f.Room)
	return false
}

// chargeHistory takes a reply's n bytes from the history budget; the
// budget may go into debt by one reply, which later history frames wait
// out (historyAllowed).
func (c *Conn) chargeHistory(n int) {
	n = min(n, c.history.Burst())
	c.history.ReserveN(time.Now(), n)
	c.historyLast = n
	if c.historyMean == 0 {
		c.historyMean = float64(n)
	} else {
		c.historyMean += (float64(n) - c.historyMean) / 4
	}
}

// historyReply is the bytes the next reply is expected to cost: the larger
// of the last one and the running mean, so that a small reply (the joined
// of an empty room) does not make the pages after it look cheap.
func (c *Conn) historyReply() float64 {
	return max(float64(c.historyLast), c.historyMean)
}

// historyFailed records a failed history read: at debug for this
// connection, and once per outage for the gateway (not once per frame).
func (c *Conn) historyFailed(room string, err error) {
	c.log.Debug("history read failed", "room", room, "err", err)
	c.gw.histFail.Fail("", err)
}
