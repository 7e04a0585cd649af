package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// tickEvery is how often the writer looks for rooms due for a rejoin (after
// a refused join, or a room that fell behind once Events has room again)
// and for lost-room events waiting for space.
const tickEvery = 100 * time.Millisecond

// maxReasonBytes bounds the response body a HandshakeError quotes.
const maxReasonBytes = 256

// session is one WebSocket connection. The run goroutine reads it; its
// writer goroutine owns every data write, and the reader only answers pings
// (WriteControl may run alongside a writer).
type session struct {
	conn *websocket.Conn
	// ctx ends when the session ends or the client stops.
	ctx    context.Context
	cancel context.CancelFunc
	// wake (capacity 1) tells the writer that a frame may be due; a full
	// wake already says so.
	wake chan struct{}
	// control holds frames to write before any send: history and leave
	// requests. Guarded by Client.mu; bounded by the callers waiting for
	// them and one fill request per room.
	control [][]byte
	// writerDone is closed when the writer has returned.
	writerDone chan struct{}
}

// notify wakes the writer without blocking.
func (s *session) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dial opens one connection.
func (c *Client) dial(ctx context.Context) (*websocket.Conn, error) {
	h := c.cfg.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: token: %w", err)
		}
		h.Set("Authorization", "Bearer "+tok)
	}
	conn, resp, err := c.cfg.Dialer.DialContext(ctx, c.url, h)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			return nil, handshakeError(resp)
		}
		return nil, fmt.Errorf("client: dial: %w", err)
	}
	conn.SetReadLimit(c.cfg.ReadLimit)
	return conn, nil
}

func handshakeError(resp *http.Response) *HandshakeError {
	e := &HandshakeError{StatusCode: resp.StatusCode}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBytes)) // best effort: the status says enough
		e.Reason = strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// run serves connections until the client stops; it is the client's one
// long-lived goroutine and reads every connection itself.
func (c *Client) run(conn *websocket.Conn) {
	defer c.finish()
	attempt := 0
	for {
		started := time.Now()
		err := c.serve(conn)
		if c.ctx.Err() != nil {
			return
		}
		var wait time.Duration // at least this long before the next dial
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce) && ce.Code == closeUnauthorized:
			c.stop(fmt.Errorf("server closed the connection (%d %s): %w", ce.Code, ce.Text, ErrUnauthorized))
			return
		case errors.As(err, &ce) && ce.Code == closeTokenExpired:
			attempt = 0 // a fresh token is all it takes
		case time.Since(started) >= c.cfg.StableAfter:
			attempt = 0
		}
		c.log.Info("chatstream connection lost; reconnecting", "err", err)
		for {
			delay := max(backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, attempt), wait)
			attempt++
			if !sleep(c.ctx, delay) {
				return
			}
			conn, err = c.dial(c.ctx)
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			wait = 0
			var he *HandshakeError
			if errors.As(err, &he) {
				if he.permanent() {
					c.stop(err)
					return
				}
				wait = he.RetryAfter
			}
			c.log.Info("chatstream reconnect failed", "attempt", attempt, "err", err)
		}
	}
}

// stop records why the client stops for good.
func (c *Client) stop(err error) {
	c.log.Warn("chatstream client stopped", "err", err)
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// backoff returns a random wait in [0, min(hi, lo·2^attempt)).
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	limit := lo
	for i := 0; i < attempt && limit < hi; i++ {
		limit *= 2
	}
	return rand.N(max(min(limit, hi), 1))
}

// sleep waits d and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// serve runs one connection: it starts its writer, reads until the
// connection ends and returns why.
func (c *Client) serve(conn *websocket.Conn) error {
	ctx, cancel := context.WithCancel(c.ctx)
	s := &session{conn: conn, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), writerDone: make(chan struct{})}
	c.mu.Lock()
	c.sess = s
	c.stats.Connects++
	c.mu.Unlock()
	c.log.Info("chatstream connected")
	go c.writer(s)
	err := c.read(s)
	cancel()
	_ = conn.Close() // ends the writer's write, if any; closing twice is harmless
	<-s.writerDone
	c.mu.Lock()
	c.endSession(s, err)
	c.mu.Unlock()
	return err
}

// read reads server messages until the connection ends.
func (c *Client) read(s *session) error {
	conn := s.conn
	extend := func() error { return conn.SetReadDeadline(time.Now().Add(c.cfg.PongWait)) }
	if err := extend(); err != nil {
		return err
	}
	conn.SetPongHandler(func(string) error { return extend() })
	conn.SetPingHandler(func(data string) error {
		if err := extend(); err != nil {
			return err
		}
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.WriteWait))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
			return nil // as gorilla's own handler: the read fails next if it matters
		}
		return err
	})
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		if err := extend(); err != nil {
			return err
		}
		if kind != websocket.TextMessage {
			continue // the protocol has text messages only
		}
		c.receive(s, data)
	}
}

// receive handles one server message: one or more frames separated by
// "\n".
func (c *Client) receive(s *session, data []byte) {
	var frames []*serverFrame
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		f := new(serverFrame)
		if err := json.Unmarshal(line, f); err != nil {
			c.log.Debug("chatstream frame ignored", "err", err)
			continue // not a frame of the protocol (PROTOCOL.md §2)
		}
		frames = append(frames, f)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return
	}
	for _, f := range frames {
		c.handle(s, f)
	}
}

// handle dispatches one server frame. It needs mu.
func (c *Client) handle(s *session, f *serverFrame) {
	switch f.Type {
	case typeMessage:
		m := f.wireMessage
		m.Epoch = f.Epoch // the frame's own epoch field shadows the embedded one
		c.onMessage(m)
	case typeAck:
		c.onAck(f)
	case typeJoined:
		c.onJoined(s, f)
	case typeHistory:
		c.onHistory(s, f)
	case typeError:
		c.onError(s, f)
	case typeLeft:
		if req := c.requests[f.Ref]; req != nil {
			delete(c.requests, f.Ref)
			req.finish(HistoryPage{}, nil)
		}
	case typePresence:
		// Presence is not part of this client's API yet.
	default:
		// Unknown frame types are ignored (PROTOCOL.md §2).
	}
}

// writer writes the frames due on s until the session ends; on Close it
// says goodbye with 1000 first.
func (c *Client) writer(s *session) {
	defer close(s.writerDone)
	ping := time.NewTicker(c.cfg.PongWait * 9 / 10)
	defer ping.Stop()
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		frame, wait := c.next(s)
		if frame != nil {
			if err := c.write(s, websocket.TextMessage, frame); err != nil {
				c.hangUp(s)
				return
			}
			continue
		}
		var pause *time.Timer
		var paused <-chan time.Time
		if wait > 0 {
			pause = time.NewTimer(wait)
			paused = pause.C
		}
		ok := c.wait(s, paused, ping.C, tick.C)
		if pause != nil {
			pause.Stop()
		}
		if !ok {
			return
		}
	}
}

// wait waits for the writer's next reason to act and acts on pings and
// ticks; it reports false when the writer must return.
func (c *Client) wait(s *session, paused, ping, tick <-chan time.Time) bool {
	select {
	case <-s.ctx.Done():
		c.hangUp(s)
		return false
	case <-s.wake:
	case <-paused:
	case <-tick:
		c.tick(s)
	case <-ping:
		if err := c.write(s, websocket.PingMessage, nil); err != nil {
			c.hangUp(s)
			return false
		}
	}
	return true
}

// hangUp closes s's connection, which ends its reader; when the client is
// stopping it says goodbye with 1000 first.
func (c *Client) hangUp(s *session) {
	if c.ctx.Err() != nil {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = s.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.cfg.WriteWait)) // best effort: we are leaving
	}
	_ = s.conn.Close() // closing twice is harmless
}

// write writes one frame within the frame rate and the write deadline.
func (c *Client) write(s *session, kind int, data []byte) error {
	if err := c.limiter.Wait(s.ctx); err != nil {
		return err
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteWait)); err != nil {
		return err
	}
	return s.conn.WriteMessage(kind, data)
}

// next picks the next frame to write on s: a control frame, then a join of
// a room that needs one, then the oldest send whose room is joined. It
// returns nil when nothing is due, with how long a rate limit holds writes
// back.
func (c *Client) next(s *session) ([]byte, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return nil, 0
	}
	now := time.Now()
	if wait := c.pausedUntil.Sub(now); wait > 0 {
		return nil, wait
	}
	if len(s.control) > 0 {
		f := s.control[0]
		s.control = s.control[1:]
		return f, 0
	}
	for _, r := range c.rooms {
		if r.state == stateIdle && !now.Before(r.retryAt) {
			return c.joinFrame(r), 0
		}
		if r.state == stateFilling && r.fill.ref == "" && !now.Before(r.fill.retryAt) {
			return c.fillFrame(r), 0
		}
	}
	// A send waiting for its retry, or for its room's rejoin to show
	// whether it was stored, holds back the later sends of its room, so
	// that they are stored in call order.
	var held map[string]bool
	for _, p := range c.sends {
		if p.state != sendQueued || held[p.room] {
			continue
		}
		if p.uncertain || now.Before(p.retryAt) {
			if held == nil {
				held = map[string]bool{}
			}
			held[p.room] = true
			continue
		}
		if r := c.rooms[p.room]; r == nil || r.state != stateReady {
			continue
		}
		p.state = sendWritten
		if p.writes == 0 {
			p.firstWrite = now
		} else {
			c.stats.Resent++
		}
		p.writes++
		return p.frame, 0
	}
	return nil, 0
}

// tick runs every tickEvery on the writer (which then looks for frames now
// due: joins and sends whose retry time has come): it hands over lost-room
// events that now fit, and once Events is at least half empty it lets
// every room that fell behind join again from its last delivered seq.
func (c *Client) tick(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return
	}
	for len(c.lost) > 0 && c.emit(c.lost[0]) {
		c.lost = c.lost[1:]
	}
	if c.free()*2 < cap(c.events) {
		return
	}
	for _, r := range c.rooms {
		if r.behind && r.state == stateReady {
			r.state = stateIdle // next picks its join
		}
	}
}

// endSession puts what was in flight on s back in line for the next
// connection. It needs mu.
func (c *Client) endSession(s *session, err error) {
	if c.sess != s {
		return
	}
	c.sess = nil
	c.pausedUntil = time.Time{} // the server's frame limit is per connection
	for _, r := range c.rooms {
		r.state, r.joinRef, r.fill, r.retryAt = stateIdle, "", nil, time.Time{}
	}
	for ref, req := range c.requests {
		delete(c.requests, ref)
		if req.kind == reqLeave {
			req.finish(HistoryPage{}, nil) // a lost connection leaves every room
		} else {
			req.finish(HistoryPage{}, ErrNotConnected)
		}
	}
	var largest *pendingSend
	for _, p := range c.sends {
		if p.state == sendWritten {
			// Stored or not: the rejoin's history tells (PROTOCOL.md §11.3).
			p.state, p.uncertain = sendQueued, true
			if largest == nil || len(p.frame) > len(largest.frame) {
				largest = p
			}
		}
	}
	var ce *websocket.CloseError
	if largest != nil && errors.As(err, &ce) && ce.Code == closeTooLarge {
		// The server's read limit is below Config.MaxFrameBytes; sending
		// the frame again would only repeat this.
		c.settle(largest, Ack{}, &Error{Code: CodeTooLarge, Reason: "the server closed the connection: frame over its read limit", Ref: largest.ref, Room: largest.room})
	}
	for _, p := range slices.Clone(c.sends) {
		if c.rooms[p.room] == nil {
			c.settle(p, Ack{}, ErrLeft)
		}
	}
}
