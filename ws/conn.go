package ws

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/chatstream/chatstream/pipeline"
)

// errShuttingDown ends a read loop from the pong handler during shutdown.
var errShuttingDown = errors.New("ws: shutting down")

// closeGrace is how long the writer waits for the client's close reply
// before it drops the TCP connection.
const closeGrace = time.Second

// Conn is one WebSocket connection. Its reader goroutine (the HTTP handler's)
// decodes frames and owns rooms; its writer goroutine owns every write except
// close frames sent by gorilla itself. Other goroutines only call enqueue and
// close.
type Conn struct {
	id   string
	user string
	ws   *websocket.Conn
	gw   *Gateway
	log  *slog.Logger

	// send is the bounded queue of encoded server frames; it is never
	// closed, the writer stops on done instead. queued is the bytes of
	// the frames in it (counted before a frame enters and after it
	// leaves, so never less than the truth), at most SendQueueBytes.
	send   chan []byte
	queued atomic.Int64
	// done is closed once, by close, to stop the writer.
	done      chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
	// closeCode, closeReason and drain are written once, before done is
	// closed, and read by the writer after.
	closeCode   int
	closeReason string
	drain       bool

	readerDone chan struct{}
	limiter    *rate.Limiter
	// flood, lastLimited (the last rate_limited answer) and rooms are
	// owned by the reader goroutine.
	flood       floodMeter
	lastLimited time.Time
	rooms       map[string]struct{}
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
	budget := int64(c.gw.cfg.SendQueueBytes)
	for {
		cur := c.queued.Load()
		if cur+n > budget {
			c.kickSlow()
			return
		}
		if c.queued.CompareAndSwap(cur, cur+n) {
			c.gw.hub.notePeak(cur + n)
			break
		}
	}
	select {
	case c.send <- frame:
	default:
		c.queued.Add(-n)
		c.kickSlow()
	}
}

// dequeued uncounts a frame taken from the queue.
func (c *Conn) dequeued(frame []byte) { c.queued.Add(-int64(len(frame))) }

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
	return first
}

// writer sends queued frames, batching every frame that is already waiting
// into one WebSocket message separated by "\n", and pings the client.
func (c *Conn) writer() {
	cfg := &c.gw.cfg
	ticker := time.NewTicker(cfg.PingPeriod)
	defer func() {
		ticker.Stop()
		_ = c.ws.Close() // the connection is finished either way
	}()
	for {
		// A close request goes first: a slow client's queue is not
		// worth writing.
		select {
		case <-c.done:
			c.finish()
			return
		default:
		}
		select {
		case frame := <-c.send:
			c.dequeued(frame)
			if err := c.writeBatch(frame); err != nil {
				c.close(websocket.CloseAbnormalClosure, "", false)
				return
			}
		case <-ticker.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait)); err != nil {
				c.close(websocket.CloseAbnormalClosure, "", false)
				return
			}
		case <-c.done:
			c.finish()
			return
		}
	}
}

// finish drains the queue if asked, sends the close frame and waits briefly
// for the reader to see the client's reply.
func (c *Conn) finish() {
	cfg := &c.gw.cfg
	if c.drain {
		for len(c.send) > 0 {
			frame := <-c.send
			c.dequeued(frame)
			if err := c.writeBatch(frame); err != nil {
				break
			}
		}
	}
	if c.closeCode != websocket.CloseAbnormalClosure {
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cfg.WriteWait)) // best effort: the peer may be gone
	}
	select {
	case <-c.readerDone:
	case <-time.After(closeGrace):
	}
}

// writeBatch writes first and then every frame already queued, up to
// MaxBatchBytes, as one text message.
func (c *Conn) writeBatch(first []byte) error {
	cfg := &c.gw.cfg
	if err := c.ws.SetWriteDeadline(time.Now().Add(cfg.WriteWait)); err != nil {
		return err
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write(first); err != nil {
		return err
	}
	size := len(first)
	for size < cfg.MaxBatchBytes {
		select {
		case frame := <-c.send:
			c.dequeued(frame)
			if _, err := w.Write(newline); err != nil {
				return err
			}
			if _, err := w.Write(frame); err != nil {
				return err
			}
			size += len(frame) + 1
			continue
		default:
		}
		break
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
	extend := func() error { return c.ws.SetReadDeadline(time.Now().Add(cfg.PongWait)) }
	_ = extend() // cannot fail before the first read
	c.ws.SetPongHandler(func(string) error {
		if c.gw.shutting.Load() {
			return errShuttingDown // ends the read loop
		}
		if c.closing.Load() || !c.admit() {
			return nil
		}
		return extend()
	})
	pong := c.ws.PingHandler()
	c.ws.SetPingHandler(func(data string) error {
		if c.closing.Load() || !c.admit() {
			return nil // no pong for a ping over the limit
		}
		_ = extend() // an error here surfaces on the next read
		return pong(data)
	})
	for {
		kind, r, err := c.ws.NextReader()
		if err != nil {
			c.readEnded(err)
			break
		}
		// Extend first, then check: a Shutdown that set the deadline to
		// now in between is then seen here, not undone.
		_ = extend() // an error here surfaces on the next read
		if c.gw.shutting.Load() {
			c.readEnded(nil)
			break
		}
		if c.closing.Load() || !c.admit() {
			if _, err := io.Copy(io.Discard, r); err != nil {
				c.readEnded(err)
				break
			}
			continue
		}
		data, err := io.ReadAll(r)
		if err != nil {
			c.readEnded(err)
			break
		}
		if kind != websocket.TextMessage {
			c.enqueue(errFrame(pipeline.Errorf(CodeBadFrame, "binary frames are not supported; send JSON text frames"), "", ""))
			continue
		}
		c.handle(data)
	}
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.gw.hub.removeConn(c, rooms)
}

// readEnded closes the connection after the read loop ended with err.
func (c *Conn) readEnded(err error) {
	switch {
	case c.gw.shutting.Load():
		c.close(websocket.CloseGoingAway, "server shutting down", true)
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
	if perr != nil {
		c.enqueue(errFrame(perr, f.Ref, f.Room))
		return
	}
	_, joined := c.rooms[f.Room]
	if !joined && f.Type != TypeJoin {
		c.enqueue(errFrame(pipeline.Errorf(CodeNotJoined, "join room %s first", f.Room), f.Ref, f.Room))
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
		c.submit(f)
	case TypeHistory:
		c.olderHistory(f)
	}
}

// submit submits a send frame and queues its outcome: ack or error.
func (c *Conn) submit(f ClientFrame) {
	o, err := c.gw.sub.Submit(c.gw.ctx, pipeline.Submission{
		ConnID: c.id, User: c.user, Room: f.Room, Text: f.Text, Ref: f.Ref,
	})
	switch {
	case err != nil:
		c.enqueue(errFrame(pipeline.Errorf(pipeline.CodeUnavailable, "the server cannot take messages right now; try again"), f.Ref, f.Room))
	case o.Err != nil:
		c.enqueue(errFrame(o.Err, o.Ref, o.Room))
	default:
		c.enqueue(encode(ackFrame{Type: TypeAck, Ref: o.Ref, Room: o.Room, ID: o.ID, Seq: o.Seq, Epoch: o.Epoch}))
	}
}

// join registers the connection in the room for live delivery, reads the
// history asked for, and queues joined followed by any live message that
// arrived meanwhile and is not in the history.
func (c *Conn) join(f ClientFrame, rejoin bool) {
	if !rejoin && len(c.rooms) >= c.gw.cfg.MaxRooms {
		c.enqueue(errFrame(pipeline.Errorf(CodeRoomLimit, "a connection may join at most %d rooms", c.gw.cfg.MaxRooms), f.Ref, f.Room))
		return
	}
	c.rooms[f.Room] = struct{}{}
	c.gw.hub.beginJoin(c, f.Room)
	p, truncated, last, reset, err := c.readJoinHistory(f)
	if err != nil {
		delete(c.rooms, f.Room)
		c.gw.hub.leave(c, f.Room)
		c.historyFailed(f.Room, err)
		c.enqueue(errFrame(pipeline.Errorf(pipeline.CodeUnavailable, "history is unavailable; join again"), f.Ref, f.Room))
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
		c.enqueue(errFrame(pipeline.Errorf(pipeline.CodeUnavailable, "history is unavailable"), f.Ref, f.Room))
		return
	}
	c.gw.histFail.OK("")
	c.enqueue(encode(historyFrame{Type: TypeHistory, Room: f.Room, Ref: f.Ref, Messages: p.msgs, More: p.more}))
}

// historyFailed records a failed history read: at debug for this
// connection, and once per outage for the gateway (not once per frame).
func (c *Conn) historyFailed(room string, err error) {
	c.log.Debug("history read failed", "room", room, "err", err)
	c.gw.histFail.Fail("", err)
}
