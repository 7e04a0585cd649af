package client

import (
	"context"
	"math"
	"slices"
	"time"
)

// JoinOptions say which messages a Join delivers before the live ones.
type JoinOptions struct {
	// History is how many of the room's newest messages to deliver,
	// 0–MaxHistory; 0 delivers none. Ignored when Since is set.
	History int
	// Since resumes after a seq of this room, e.g. one that LastSeq
	// returned in an earlier run: every kept message after it is
	// delivered.
	Since string
	// Epoch is the room's epoch that Since belongs to (from LastSeq). A
	// server that knows the room's data was lost since then answers with
	// a reset (EventReset).
	Epoch string
}

// HistoryPage is a page of older messages (Client.History).
type HistoryPage struct {
	// Messages are oldest first.
	Messages []Message
	// More reports that older messages may exist.
	More bool
}

// roomState is where a room's join stands on the current connection.
type roomState int

const (
	// stateIdle: not joined on this connection; the writer sends a join
	// once retryAt has passed.
	stateIdle roomState = iota
	// stateJoining: a join is on the wire (joinRef).
	stateJoining
	// stateFilling: joined; the client pages back through history that
	// the joined reply left out ("more") before delivering any of it.
	stateFilling
	// stateReady: joined and delivering live messages.
	stateReady
)

// unlimited is the want of a range without a count.
const unlimited = math.MaxInt

// roomEntry is a room the client is in. Guarded by Client.mu.
type roomEntry struct {
	name string
	// history is JoinOptions.History, used while the room has no resume
	// point.
	history int

	// The delivered state: what the consumer has been given.
	// lastSeq is the newest seq delivered (or the anchor of a join without
	// history); epoch the room's epoch; seen the recent seqs delivered.
	lastSeq string
	epoch   string
	seen    seqSet
	// anchored reports that a join without since may deliver everything
	// the room holds: the room had nothing when first joined, or was
	// reset, so everything stored since is new to the consumer.
	anchored bool
	// behind reports that an event of the room did not fit in Events: the
	// room's further events are dropped until it joins again from
	// lastSeq (tick, once Events has room).
	behind bool

	everJoined bool
	waiters    []chan error

	// Per connection.
	state   roomState
	joinRef string
	req     joinRequest
	retryAt time.Time
	fill    *fill
}

// joinRequest is what a join on the wire asked for.
type joinRequest struct {
	// since is the lower bound of the range ("" none); want the most
	// messages wanted.
	since string
	want  int
	// anchorOnly: a join with no history asks for the newest message only
	// to learn where to resume; it is not delivered.
	anchorOnly bool
}

// fill collects a join's messages while it pages back.
type fill struct {
	req   joinRequest
	epoch string
	reset bool
	// gap: messages the consumer has not seen are missing before msgs
	// (trimmed, or beyond Config.MaxFill).
	gap bool
	// msgs are the messages collected, oldest first.
	msgs []wireMessage
	// reached: a page met since; empty: a page was empty.
	reached, empty bool
	// ref is the history request on the wire; empty while a request
	// refused over the server's history budget waits for retryAt.
	ref     string
	retryAt time.Time
	// live holds the live messages that arrive meanwhile, at most
	// Config.EventBuffer; liveOverflow reports one more was dropped (the
	// room then falls behind and re-fetches it).
	live         []wireMessage
	liveOverflow bool
}

// add takes a page, oldest first, that is older than every message
// collected.
func (f *fill) add(page []wireMessage) {
	f.empty = len(page) == 0
	keep := page
	if f.req.since != "" {
		for i := len(page) - 1; i >= 0; i-- {
			if notAfter(page[i].Seq, f.req.since) {
				keep, f.reached = page[i+1:], true
				break
			}
		}
	}
	if room := f.req.want - len(f.msgs); len(keep) > room {
		keep = keep[len(keep)-room:]
	}
	f.msgs = append(slices.Clone(keep), f.msgs...)
}

// needMore reports whether the range wants older messages than those
// collected, given that the server said more exist.
func (f *fill) needMore(maxFill int) bool {
	return !f.reached && !f.empty && len(f.msgs) < f.req.want && len(f.msgs) < maxFill
}

// cutShort reports whether the fill stops at maxFill with wanted messages
// left out (more), which the consumer must be told as a gap.
func (f *fill) cutShort(more bool, maxFill int) bool {
	return more && !f.reached && !f.empty && len(f.msgs) >= maxFill && len(f.msgs) < f.req.want
}

func (r *roomEntry) resolveWaiters(err error) {
	for _, w := range r.waiters {
		w <- err // capacity 1, sent once
	}
	r.waiters = nil
}

// isNew reports whether seq has not been delivered in r.
func (r *roomEntry) isNew(seq string) bool {
	if seq == "" || r.seen.contains(seq) {
		return false
	}
	return r.lastSeq == "" || !notAfter(seq, r.lastSeq)
}

func (r *roomEntry) commit(seq string) {
	r.seen.add(seq)
	r.lastSeq = seq
}

// Join joins room and returns once the server has confirmed it; the
// messages opts asks for, then the room's live messages, arrive on Events.
// While the client is reconnecting the join waits for the connection. It
// returns the server's refusal as an *Error (CodeInvalid, CodeRoomLimit,
// ...), retrying unavailable and rate-limited joins itself. If ctx ends
// first, the client keeps joining the room in the background (Leave gives
// it up). Joining a room already joined returns nil at once. After a
// reconnect the client rejoins every room by itself, resuming after the
// last message delivered.
func (c *Client) Join(ctx context.Context, room string, opts JoinOptions) error {
	if opts.History < 0 || opts.History > MaxHistory {
		return &Error{Code: CodeInvalid, Reason: "history must be between 0 and 500", Room: room}
	}
	if room == "" {
		return &Error{Code: CodeInvalid, Reason: "room name is empty"}
	}
	w := make(chan error, 1)
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return c.closedErr()
	}
	r := c.rooms[room]
	if r != nil && r.everJoined {
		c.mu.Unlock()
		return nil
	}
	if r == nil {
		r = &roomEntry{name: room, history: opts.History, seen: newSeqSet(c.cfg.SeenPerRoom), epoch: opts.Epoch}
		if opts.Since != "" {
			r.lastSeq, r.anchored = opts.Since, true
		}
		c.rooms[room] = r
		if c.sess != nil {
			c.sess.notify()
		}
	}
	r.waiters = append(r.waiters, w)
	c.mu.Unlock()
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if i := slices.Index(r.waiters, w); i >= 0 {
			r.waiters = slices.Delete(r.waiters, i, i+1)
			return ctx.Err()
		}
		return <-w // answered meanwhile
	}
}

// joinFrame builds the join of r and marks it on the wire. It needs mu.
func (c *Client) joinFrame(r *roomEntry) []byte {
	r.joinRef = c.nextRef(joinPrefix)
	r.state = stateJoining
	r.behind = false // the reply carries everything after lastSeq
	f := clientFrame{Type: typeJoin, Room: r.name, Ref: r.joinRef}
	switch {
	case r.lastSeq != "":
		f.Since, f.Epoch = r.lastSeq, r.epoch
		r.req = joinRequest{since: r.lastSeq, want: unlimited}
	case r.anchored:
		// Everything the room holds is new to the consumer. (A server
		// without "more" sends the newest MaxHistory only.)
		n := MaxHistory
		f.History = &n
		r.req = joinRequest{want: unlimited}
	default:
		n := max(r.history, 1)
		f.History = &n
		r.req = joinRequest{want: r.history, anchorOnly: r.history == 0}
	}
	return encodeFrame(f)
}

// onJoined handles a joined reply. It needs mu.
func (c *Client) onJoined(s *session, f *serverFrame) {
	r := c.rooms[f.Room]
	if r == nil || r.state != stateJoining || f.Ref != r.joinRef {
		return // left meanwhile, or the reply to a join given up
	}
	r.joinRef = ""
	if r.req.anchorOnly {
		if n := len(f.History); n > 0 {
			r.commit(f.History[n-1].Seq)
		}
		if f.Epoch != "" {
			r.epoch = f.Epoch
		}
		r.anchored = true
		c.ready(r, f.History)
		return
	}
	fl := &fill{req: r.req, epoch: f.Epoch, reset: f.Reset, gap: f.Truncated}
	if fl.reset {
		// The seqs before the reset mean nothing now: the new data is
		// new to the consumer, all of it.
		fl.req = joinRequest{want: unlimited}
	}
	fl.add(f.History)
	if f.More && fl.needMore(c.cfg.MaxFill) {
		r.state, r.fill = stateFilling, fl
		c.requestFill(s, r)
		return
	}
	fl.gap = fl.gap || fl.cutShort(f.More, c.cfg.MaxFill)
	c.complete(r, fl)
}

// requestFill asks for the page before the oldest message collected. It
// needs mu.
func (c *Client) requestFill(s *session, r *roomEntry) {
	s.control = append(s.control, c.fillFrame(r))
	s.notify()
}

// fillFrame registers r's next fill request and returns its frame. It
// needs mu.
func (c *Client) fillFrame(r *roomEntry) []byte {
	fl := r.fill
	fl.ref = c.nextRef(fillPrefix)
	c.requests[fl.ref] = &request{kind: reqFill, room: r.name}
	limit := min(c.cfg.PageLimit, fl.req.want-len(fl.msgs), c.cfg.MaxFill-len(fl.msgs))
	return encodeFrame(clientFrame{
		Type: typeHistory, Room: r.name, Ref: fl.ref, Before: fl.msgs[0].Seq, After: fl.req.since, Limit: limit,
	})
}

// onFill handles a history reply to a fill request. It needs mu.
func (c *Client) onFill(s *session, f *serverFrame) {
	r := c.rooms[f.Room]
	if r == nil || r.state != stateFilling || r.fill.ref != f.Ref {
		return
	}
	fl := r.fill
	fl.add(f.Messages)
	if f.More && fl.needMore(c.cfg.MaxFill) {
		c.requestFill(s, r)
		return
	}
	fl.gap = fl.gap || fl.cutShort(f.More, c.cfg.MaxFill)
	c.complete(r, fl)
}

// complete ends a join: it settles the sends the join's history answers,
// confirms the join and delivers the collected messages, then the live ones
// held meanwhile. It needs mu.
func (c *Client) complete(r *roomEntry, fl *fill) {
	r.fill = nil
	msgs := append(fl.msgs, fl.live...)
	c.ready(r, msgs)
	if r.behind {
		return
	}
	var prefix []Event
	if fl.reset {
		prefix = append(prefix, Event{Type: EventReset, Room: r.name, Epoch: fl.epoch})
	}
	if fl.gap {
		prefix = append(prefix, Event{Type: EventGap, Room: r.name})
	}
	// A reset or gap goes out only with the message after it, so that a
	// room that falls behind right after one does not report it twice.
	if need := len(prefix) + min(len(msgs), 1); need > c.free() {
		r.behind = true
		c.stats.Deferred += int64(len(prefix))
		return
	}
	for _, ev := range prefix {
		c.emit(ev) // fits: checked above
	}
	if fl.reset {
		r.lastSeq = ""
		r.seen.clear()
		r.anchored = true
	}
	if fl.epoch != "" {
		r.epoch = fl.epoch
	}
	for _, m := range msgs {
		if !c.deliver(r, m) {
			return
		}
	}
	if fl.liveOverflow {
		r.behind = true
	}
	if r.lastSeq != "" || len(msgs) == 0 {
		r.anchored = true
	}
}

// ready marks r joined, settles the uncertain sends that msgs show stored
// and confirms the first join. It needs mu.
func (c *Client) ready(r *roomEntry, msgs []wireMessage) {
	r.state = stateReady
	for _, p := range slices.Clone(c.sends) {
		if p.room != r.name || !p.uncertain {
			continue
		}
		p.uncertain = false
		for _, m := range msgs {
			if m.User == c.cfg.User && m.Ref == p.ref {
				c.settle(p, Ack{Room: r.name, ID: m.ID, Seq: m.Seq, Ref: p.ref}, nil)
				break
			}
		}
	}
	if !r.everJoined {
		r.everJoined = true
		r.resolveWaiters(nil)
	}
	if c.sess != nil {
		c.sess.notify() // sends for r may go now
	}
}

// deliver puts m in Events unless r already delivered it; it reports false
// when m did not fit and r fell behind. It needs mu.
func (c *Client) deliver(r *roomEntry, m wireMessage) bool {
	if r.behind {
		c.stats.Deferred++
		return false
	}
	if !r.isNew(m.Seq) {
		return true
	}
	if !c.emit(Event{Type: EventMessage, Room: r.name, Message: m.message()}) {
		r.behind = true
		c.stats.Deferred++
		return false
	}
	r.commit(m.Seq)
	// A message carries its room's epoch: a room joined while empty learns
	// it here, so its resume can detect a loss. A known epoch is kept: a
	// message of another epoch means the room was lost, which the next
	// resume learns as a reset.
	if r.epoch == "" && m.Epoch != "" {
		r.epoch = m.Epoch
	}
	return true
}

// onMessage handles a live message. It needs mu.
func (c *Client) onMessage(m wireMessage) {
	if m.User == c.cfg.User && m.Ref != "" {
		// Our own message can arrive before its ack (PROTOCOL.md §11.2).
		if p := c.findSend(m.Ref); p != nil {
			c.settle(p, Ack{Room: m.Room, ID: m.ID, Seq: m.Seq, Ref: m.Ref}, nil)
		}
	}
	r := c.rooms[m.Room]
	if r == nil {
		return
	}
	switch r.state {
	case stateReady:
		c.deliver(r, m)
	case stateFilling:
		if len(r.fill.live) < c.cfg.EventBuffer {
			r.fill.live = append(r.fill.live, m)
		} else {
			r.fill.liveOverflow = true
			c.stats.Deferred++
		}
	default:
		// A rejoin is on the wire: its reply holds this message.
	}
}

// onJoinRefused handles an error frame that answers r's join. It needs mu.
func (c *Client) onJoinRefused(r *roomEntry, e *Error) {
	r.joinRef = ""
	switch e.Code {
	case CodeUnavailable, CodeInternal, CodeRateLimited:
		wait := e.RetryAfter
		if wait == 0 {
			wait = c.cfg.RetryWait
		}
		r.state, r.retryAt = stateIdle, time.Now().Add(wait)
		return
	}
	delete(c.rooms, r.name)
	r.resolveWaiters(e)
	for _, p := range slices.Clone(c.sends) {
		if p.room == r.name {
			c.settle(p, Ack{}, e)
		}
	}
	if r.everJoined {
		c.log.Warn("chatstream rejoin refused; room lost", "room", r.name, "err", e)
		ev := Event{Type: EventRoomLost, Room: r.name, Err: e}
		if len(c.lost) > 0 || !c.emit(ev) {
			if len(c.lost) == cap(c.events) {
				c.log.Warn("chatstream room-lost event dropped: Events is not read", "room", c.lost[0].Room)
				c.lost = c.lost[1:]
			}
			c.lost = append(c.lost, ev)
		}
	}
}

// Leave leaves room: the client stops delivering its events and no longer
// rejoins it; sends still queued for it fail with ErrLeft. It returns when
// the server confirms, or at once when the client is not connected.
func (c *Client) Leave(ctx context.Context, room string) error {
	c.mu.Lock()
	r := c.rooms[room]
	if r == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.rooms, room)
	r.resolveWaiters(ErrLeft)
	for _, p := range slices.Clone(c.sends) {
		if p.room == room && p.state == sendQueued {
			c.settle(p, Ack{}, ErrLeft)
		}
	}
	s := c.sess
	if s == nil {
		c.mu.Unlock()
		return nil // a lost connection left every room
	}
	// Sent even when the room's join is not confirmed: a server that does
	// not have the client in the room answers not_joined, which is as good.
	req := c.newRequest(s, reqLeave, clientFrame{Type: typeLeave, Room: room})
	c.mu.Unlock()
	_, err := c.await(ctx, req)
	return err
}

// History returns up to limit (1–MaxHistory) messages of a joined room
// that come before seq before (the newest when before is ""), oldest
// first. They are not delivered on Events. It fails with ErrNotConnected
// while the client is reconnecting or the room is being rejoined.
func (c *Client) History(ctx context.Context, room, before string, limit int) (HistoryPage, error) {
	if limit < 1 || limit > MaxHistory {
		return HistoryPage{}, &Error{Code: CodeInvalid, Reason: "limit must be between 1 and 500", Room: room}
	}
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return HistoryPage{}, c.closedErr()
	}
	r := c.rooms[room]
	if r == nil {
		c.mu.Unlock()
		return HistoryPage{}, &Error{Code: CodeNotJoined, Reason: "join room " + room + " first", Room: room}
	}
	s := c.sess
	if s == nil || r.state != stateReady {
		c.mu.Unlock()
		return HistoryPage{}, ErrNotConnected
	}
	req := c.newRequest(s, reqHistory, clientFrame{Type: typeHistory, Room: room, Before: before, Limit: limit})
	c.mu.Unlock()
	return c.await(ctx, req)
}

// onHistory handles a history reply. It needs mu.
func (c *Client) onHistory(s *session, f *serverFrame) {
	req := c.requests[f.Ref]
	if req == nil {
		return
	}
	delete(c.requests, f.Ref)
	if req.kind == reqFill {
		c.onFill(s, f)
		return
	}
	page := HistoryPage{More: f.More, Messages: make([]Message, len(f.Messages))}
	for i, m := range f.Messages {
		page.Messages[i] = m.message()
	}
	req.finish(page, nil)
}

// reqKind is what a request waits for.
type reqKind int

const (
	reqFill reqKind = iota
	reqHistory
	reqLeave
)

// request is a history or leave frame waiting for its reply. Guarded by
// Client.mu.
type request struct {
	kind reqKind
	room string
	// done (capacity 1) receives the one result of a history or leave
	// request; nil for fills. finished reports it was sent.
	done     chan requestResult
	finished bool
}

type requestResult struct {
	page HistoryPage
	err  error
}

func (q *request) finish(page HistoryPage, err error) {
	if q.done != nil && !q.finished {
		q.finished = true
		q.done <- requestResult{page, err}
	}
}

// newRequest queues f with a fresh ref on s. It needs mu.
func (c *Client) newRequest(s *session, kind reqKind, f clientFrame) *request {
	prefix := "r"
	if kind == reqHistory {
		prefix = historyPrefix
	}
	f.Ref = c.nextRef(prefix)
	req := &request{kind: kind, room: f.Room, done: make(chan requestResult, 1)}
	c.requests[f.Ref] = req
	s.control = append(s.control, encodeFrame(f))
	s.notify()
	return req
}

// await waits for req's result.
func (c *Client) await(ctx context.Context, req *request) (HistoryPage, error) {
	done := req.done
	select {
	case res := <-done:
		return res.page, res.err
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		for ref, q := range c.requests {
			if q == req {
				delete(c.requests, ref)
			}
		}
		select {
		case res := <-done:
			return res.page, res.err
		default:
			return HistoryPage{}, ctx.Err()
		}
	}
}
