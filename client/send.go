package client

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sendState is where a pending send stands.
type sendState int

const (
	// sendQueued: waiting to be written (again).
	sendQueued sendState = iota
	// sendWritten: on the wire of the current connection, no reply yet.
	sendWritten
)

// pendingSend is a Send waiting for its ack. Guarded by Client.mu.
type pendingSend struct {
	ref, room string
	// frame is the encoded send frame, written unchanged every time: a
	// resend carries the original ref, so a server that remembers refs
	// answers it with the first ack instead of storing it twice.
	frame []byte
	state sendState
	// uncertain: the frame was on the wire when its connection was lost,
	// so it may be stored; it is not written again until the room's rejoin
	// has shown whether it was (PROTOCOL.md §11.3).
	uncertain bool
	// writes counts the times the frame was written; firstWrite is when
	// it was written first. A send answered with unavailable or internal
	// is written again once retryAt has passed.
	writes     int
	firstWrite time.Time
	retryAt    time.Time
	// done (capacity 1) receives the one result; finished reports it was
	// sent.
	done     chan sendResult
	finished bool
}

type sendResult struct {
	ack Ack
	err error
}

func (p *pendingSend) finish(ack Ack, err error) {
	if !p.finished {
		p.finished = true
		p.done <- sendResult{ack, err}
	}
}

// Send sends text to a joined room and returns its ack once the server has
// stored the message. A refusal is an *Error (errors.As): CodeRejected
// with the moderator, CodeInvalid, CodeTooLarge, CodeNotJoined for a room
// never joined. The client deals with the rest itself, always writing the
// send again with its original ref, so that a server that stored it
// already acks the original instead of storing it twice:
//   - while the client reconnects the send waits; one on the wire when its
//     connection was lost is written again unless the rejoined room's
//     history shows it stored (PROTOCOL.md §11.3);
//   - unavailable and internal answers are retried after
//     Config.RetryWait, within Config.RetryWindow of the first write
//     (after it, Send returns the *Error: the message may or may not be
//     stored);
//   - a rate_limited answer is retried after its retry_after_ms: a
//     moderator's holds back the sends of the room, the frame rate's
//     every write.
//
// Sends of one room are stored in call order, unless one is written again
// after rate_limited, unavailable or internal while a later one was already
// on the wire. Send waits for a slot while Config.MaxPending sends are
// pending. If ctx ends first Send returns ctx.Err() and gives the send up;
// one already on the wire may still be stored.
func (c *Client) Send(ctx context.Context, room, text string) (Ack, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return Ack{}, c.closedErr()
	}
	defer func() { <-c.slots }()

	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return Ack{}, c.closedErr()
	}
	if c.rooms[room] == nil {
		c.mu.Unlock()
		return Ack{}, &Error{Code: CodeNotJoined, Reason: "join room " + room + " first", Room: room}
	}
	ref := c.nextRef("m")
	frame := encodeFrame(clientFrame{Type: typeSend, Room: room, Text: text, Ref: ref})
	if len(frame) > c.cfg.MaxFrameBytes {
		c.mu.Unlock()
		return Ack{}, &Error{Code: CodeTooLarge, Reason: "the send frame is " + strconv.Itoa(len(frame)) + " bytes, over the limit of " + strconv.Itoa(c.cfg.MaxFrameBytes), Ref: ref, Room: room}
	}
	p := &pendingSend{ref: ref, room: room, frame: frame, done: make(chan sendResult, 1)}
	c.sends = append(c.sends, p)
	if c.sess != nil {
		c.sess.notify()
	}
	c.mu.Unlock()

	select {
	case res := <-p.done:
		return res.ack, res.err
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		c.settle(p, Ack{}, ctx.Err())
		res := <-p.done // ours, or the result that came first
		return res.ack, res.err
	}
}

// findSend returns the pending send with ref, or nil. It needs mu.
func (c *Client) findSend(ref string) *pendingSend {
	for _, p := range c.sends {
		if p.ref == ref {
			return p
		}
	}
	return nil
}

// settle removes p from the pending sends and gives Send its result, unless
// it had one already. It needs mu.
func (c *Client) settle(p *pendingSend, ack Ack, err error) {
	if i := slices.Index(c.sends, p); i >= 0 {
		c.sends = slices.Delete(c.sends, i, i+1)
	}
	p.finish(ack, err)
}

// onAck handles an ack. It needs mu.
func (c *Client) onAck(f *serverFrame) {
	if p := c.findSend(f.Ref); p != nil {
		c.settle(p, Ack{Room: f.Room, ID: f.ID, Seq: f.Seq, Ref: f.Ref}, nil)
	}
}

// onError handles an error frame: it finds the frame it answers by ref. It
// needs mu.
func (c *Client) onError(s *session, f *serverFrame) {
	e := &Error{
		Code: f.Code, Reason: f.Message, Ref: f.Ref, Room: f.Room, Moderator: f.Moderator,
		RetryAfter: time.Duration(f.RetryAfterMS) * time.Millisecond,
	}
	if e.Code == "" {
		e.Code = CodeInternal
	}
	wait := e.RetryAfter
	if wait == 0 {
		wait = c.cfg.RetryWait
	}
	if e.Code == CodeRateLimited {
		c.stats.RateLimited++
		switch {
		case f.Ref == "":
			// The frame rate: frames were dropped unread. Wait out the
			// server's answer interval too, so that the first frame it
			// drops after the pause is answered again.
			c.pausedUntil = time.Now().Add(max(wait, silentDropEvery))
			c.droppedUnread(s)
			return
		case e.Moderator == "" && !c.historyRef(f.Ref):
			// The frame rate of a server that names the dropped frame:
			// every write waits. (A join or history request refused over
			// the history budget waits alone, below. Servers before the
			// history budget named a join or history the frame rate
			// dropped the same way; it too now waits alone, and the next
			// dropped send pauses every write.)
			c.pausedUntil = time.Now().Add(wait)
		}
		// A moderator's limit holds back only the sends of this room (below).
	}
	if p := c.findSend(f.Ref); p != nil && f.Ref != "" {
		switch {
		case e.Code == CodeRateLimited:
			// Not stored: write it again after the wait.
			p.state, p.retryAt = sendQueued, time.Now().Add(wait)
		case (e.Code == CodeUnavailable || e.Code == CodeInternal) && time.Since(p.firstWrite) < c.cfg.RetryWindow:
			// Not known to be stored: write it again with its ref, which
			// the server acks with the original if it was (PROTOCOL.md
			// §11.3).
			p.state, p.retryAt = sendQueued, time.Now().Add(wait)
		case e.Code == CodeNotJoined && c.rooms[p.room] != nil && c.rooms[p.room].state == stateReady:
			// The server forgot the room (a failed rejoin drops it): join
			// again, then send.
			p.state = sendQueued
			c.rooms[p.room].state = stateIdle
		default:
			c.settle(p, Ack{}, e)
		}
		return
	}
	if req := c.requests[f.Ref]; req != nil && f.Ref != "" {
		delete(c.requests, f.Ref)
		switch {
		case req.kind == reqFill:
			r := c.rooms[req.room]
			switch {
			case r == nil || r.state != stateFilling || r.fill.ref != f.Ref:
			case e.Code == CodeRateLimited:
				// Over the server's history budget: the same page again
				// once it is paid back (next), keeping what was
				// collected; starting over would spend it on them again.
				r.fill.ref, r.fill.retryAt = "", time.Now().Add(wait)
			default:
				// Start over from the last delivered seq.
				r.state, r.fill, r.retryAt = stateIdle, nil, time.Now().Add(c.cfg.RetryWait)
			}
		case req.kind == reqLeave && e.Code == CodeNotJoined:
			req.finish(HistoryPage{}, nil) // the server had forgotten the room
		default:
			req.finish(HistoryPage{}, e)
		}
		return
	}
	for _, r := range c.rooms {
		if r.state == stateJoining && r.joinRef != "" && r.joinRef == f.Ref {
			c.onJoinRefused(r, e)
			return
		}
	}
	c.log.Debug("chatstream error frame", "code", e.Code, "room", e.Room, "reason", e.Reason)
}

// Ref prefixes of the frames the server's history budget answers: joins,
// fills and the application's history requests (nextRef).
const (
	joinPrefix    = "j"
	fillPrefix    = "f"
	historyPrefix = "h"
)

// historyRef reports whether ref names a join or history frame of this
// client, the frames the server's history budget answers, even one whose
// caller has since given up or whose room was left.
func (c *Client) historyRef(ref string) bool {
	for _, p := range [...]string{joinPrefix, fillPrefix, historyPrefix} {
		if strings.HasPrefix(ref, p+c.refBase+"-") {
			return true
		}
	}
	return false
}

// silentDropEvery is how often a server that drops frames over its rate
// unread answers one of them with rate_limited (without ref): the first of
// each second; the others go unanswered.
const silentDropEvery = time.Second

// droppedUnread handles a rate_limited answer without ref: the server
// dropped frames unread and does not say which, so everything on the wire
// without a reply is written again after the pause, with the same refs.
// The pause lasts at least silentDropEvery, so a frame dropped after it is
// answered and none stays unanswered. (Servers that drop frames unread
// remember send refs: a send that was stored after all is answered with
// its first ack, not stored twice.) It needs mu.
func (c *Client) droppedUnread(s *session) {
	for _, p := range c.sends {
		if p.state == sendWritten {
			p.state = sendQueued
		}
	}
	for _, r := range c.rooms {
		if r.state == stateJoining || r.state == stateFilling {
			r.state, r.joinRef, r.fill = stateIdle, "", nil
		}
	}
	for ref, req := range c.requests {
		switch req.kind {
		case reqFill:
			delete(c.requests, ref) // its room joins again
		case reqHistory:
			delete(c.requests, ref)
			req.finish(HistoryPage{}, &Error{Code: CodeRateLimited, Reason: "the request may have been dropped; ask again", Room: req.room})
		}
	}
	s.notify()
}
