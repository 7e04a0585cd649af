package client

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"golang.org/x/text/unicode/norm"
	"golang.org/x/time/rate"
)

// Message is a stored message of a room.
type Message struct {
	// Room is the message's room.
	Room string
	// ID is the message's UUID.
	ID string
	// Seq is the message's position in its room: opaque, unique within the
	// room and increasing in the order the messages were stored. Pass it
	// back as JoinOptions.Since or a History before.
	Seq string
	// User is the sender's user name.
	User string
	// Text is the text as sent.
	Text string
	// Ref is the sender's reference of the send, "" if none.
	Ref string
	// Time is when the server received the message.
	Time time.Time
}

// Ack is the server's confirmation that a sent message is stored.
type Ack struct {
	// Room, ID and Seq are those of the stored message.
	Room string
	ID   string
	Seq  string
	// Ref is the reference the client gave the send; the stored message
	// carries it too.
	Ref string
}

// EventType is the kind of an Event.
type EventType int

// Event types.
const (
	// EventMessage is a message of a joined room: from a join's history, a
	// resume, or live. Each seq is delivered at most once per room, in the
	// room's order.
	EventMessage EventType = iota + 1
	// EventReset reports that the room's stored data was lost on the
	// server (Event.Epoch is the room's new epoch): drop what you keep of
	// the room; the messages that follow are its new state.
	EventReset
	// EventGap reports that messages the client had not received were
	// trimmed by the room's retention (or exceeded Config.MaxFill): the
	// messages that follow do not continue the previous ones.
	EventGap
	// EventRoomLost reports that the client is no longer in the room: a
	// rejoin after a reconnect was refused (Event.Err).
	EventRoomLost
)

// String names the type.
func (t EventType) String() string {
	switch t {
	case EventMessage:
		return "message"
	case EventReset:
		return "reset"
	case EventGap:
		return "gap"
	case EventRoomLost:
		return "room_lost"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one item of the client's ordered stream of room events.
type Event struct {
	Type EventType
	Room string
	// Message is the message of an EventMessage.
	Message Message
	// Epoch is the room's new epoch, on EventReset.
	Epoch string
	// Err is why the room was lost, on EventRoomLost.
	Err error
}

// Stats are the client's counters since Dial.
type Stats struct {
	// Connects counts the connections opened, the first included.
	Connects int64
	// Deferred counts room events that did not fit in the Events channel
	// (or came while their room was behind): each is fetched again and
	// delivered later.
	Deferred int64
	// Resent counts send frames written again, after a reconnect or a
	// rate_limited answer, always with their original ref.
	Resent int64
	// RateLimited counts rate_limited answers.
	RateLimited int64
	// Pending is the number of sends waiting for their ack now.
	Pending int
}

// Client is a connection to a chatstream server that reconnects and resumes
// by itself until Close or its context ends. Its methods are safe for
// concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	url     string
	limiter *rate.Limiter
	// events is the bounded stream of room events; only goroutines holding
	// mu send to it, never blocking, and run closes it when it returns.
	events chan Event
	// slots bounds the sends in progress (Config.MaxPending).
	slots   chan struct{}
	refBase string
	// parent is Dial's ctx; ctx ends with it or with Close.
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	// done is closed when run has returned: every goroutine of the client
	// has ended.
	done chan struct{}

	// mu guards everything below.
	mu    sync.Mutex
	rooms map[string]*roomEntry
	// sends are the pending sends in the order Send was called.
	sends []*pendingSend
	// requests are the history and leave requests of the current session,
	// by ref.
	requests map[string]*request
	// sess is the current session, nil while reconnecting.
	sess *session
	// pausedUntil holds every write back after a rate_limited answer.
	pausedUntil time.Time
	refN        uint64
	// lost holds EventRoomLost events that did not fit in events yet, at
	// most cap(events); when it is full the oldest is dropped (its room is
	// gone either way; the drop is logged).
	lost    []Event
	stats   Stats
	stopped bool
	// err is why the client stopped; nil after Close.
	err error
}

// Dial connects to the server as cfg.User and returns a client that stays
// connected until Close is called or ctx ends: ctx bounds the client's
// whole life, not only this first handshake (Config.Dialer's
// HandshakeTimeout bounds each handshake). The first handshake is made
// once; its failure is returned (a *HandshakeError for an HTTP refusal).
// Later connection losses are retried with backoff.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The server keeps the name in NFKC ("ａｌｉｃｅ" is "alice"), and the
	// messages carry that form: own messages are recognised by it.
	cfg.User = norm.NFKC.String(cfg.User)
	u, err := endpoint(cfg.URL, cfg.User)
	if err != nil {
		return nil, err // checked by Validate
	}
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("user", cfg.User),
		url:      u,
		limiter:  rate.NewLimiter(rate.Limit(cfg.FrameRate), cfg.FrameBurst),
		events:   make(chan Event, cfg.EventBuffer),
		slots:    make(chan struct{}, cfg.MaxPending),
		refBase:  strconv.FormatUint(rand.Uint64()&(1<<48-1)|1<<48, 36),
		done:     make(chan struct{}),
		rooms:    map[string]*roomEntry{},
		requests: map[string]*request{},
	}
	c.cfg.Header = cfg.Header.Clone()
	c.parent = ctx
	c.ctx, c.cancel = context.WithCancel(ctx)
	conn, err := c.dial(c.ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	go c.run(conn)
	return c, nil
}

// Close stops the client: it closes the connection with 1000, stops
// reconnecting, fails pending sends, joins and requests with ErrClosed,
// closes Events and returns once every goroutine of the client has ended.
// Calling it again does nothing.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Done returns a channel closed once the client has stopped.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err reports why the client stopped: nil while it runs and after Close,
// the context's error when Dial's ctx ended, or a permanent failure
// (ErrUnauthorized, a permanent *HandshakeError).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Events returns the client's ordered stream of room events. It is
// bounded (Config.EventBuffer) and the client never blocks on it: a room
// whose event does not fit falls behind, and once the channel is half
// empty again the client re-fetches what the room missed, so every message
// still arrives once and in order, only later. The channel is closed when
// the client stops, after the events already in it. Use it or Messages,
// not both.
func (c *Client) Events() <-chan Event { return c.events }

// Messages returns an iterator over the messages of Events, skipping the
// other events; it ends when the client stops or the loop breaks. Programs
// that keep state per room should use Events, which also reports resets
// and gaps.
func (c *Client) Messages() iter.Seq[Message] {
	return func(yield func(Message) bool) {
		for ev := range c.events {
			if ev.Type == EventMessage && !yield(ev.Message) {
				return
			}
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Pending = len(c.sends)
	return st
}

// LastSeq returns the resume point of room: the seq of the newest message
// put in Events (or, after a join with no history, the newest message of the
// room then) and the room's epoch. A program that outlives its client can
// store them and pass them as JoinOptions.Since and Epoch to resume without
// a gap; it should store the seq of the last message it has processed
// rather than this one, which may still be waiting in Events.
func (c *Client) LastSeq(room string) (seq, epoch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		return r.lastSeq, r.epoch
	}
	return "", ""
}

// closedErr is the error of everything the stopped client gives up; it
// wraps ErrClosed and the reason, if any. It needs mu.
func (c *Client) closedErr() error {
	if c.err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	return ErrClosed
}

// emit puts ev in events if it fits. It needs mu.
func (c *Client) emit(ev Event) bool {
	if c.stopped {
		return false
	}
	select {
	case c.events <- ev:
		return true
	default:
		return false
	}
}

// free is the room left in events. It needs mu.
func (c *Client) free() int { return cap(c.events) - len(c.events) }

// nextRef returns a ref unique to this client: prefix, a random base and a
// counter. It needs mu.
func (c *Client) nextRef(prefix string) string {
	c.refN++
	return prefix + c.refBase + "-" + strconv.FormatUint(c.refN, 10)
}

// finish stops the client for good: it fails everything still waiting and
// closes events. run calls it last, once no other goroutine of the client
// is left to emit.
func (c *Client) finish() {
	c.mu.Lock()
	c.stopped = true
	if c.err == nil && c.parent.Err() != nil {
		c.err = c.parent.Err() // Close alone is not an error
	}
	err := c.closedErr()
	for _, p := range c.sends {
		p.finish(Ack{}, err)
	}
	c.sends = nil
	for _, r := range c.rooms {
		r.resolveWaiters(err)
	}
	for ref, req := range c.requests {
		req.finish(HistoryPage{}, err)
		delete(c.requests, ref)
	}
	c.mu.Unlock()
	c.cancel()
	close(c.events)
	close(c.done)
}
