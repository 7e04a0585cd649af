package ws

import (
	"math"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/pipeline"
)

// Timing of the frame limiter's answers and of dropping an abusive
// connection.
const (
	// rateLimitedEvery is the least time between two rate_limited answers
	// on one connection: frames beyond the rate are discarded unread, and
	// only the first of each second is answered, so a flood costs the
	// server neither decoding nor replies.
	rateLimitedEvery = time.Second
	// dropAfter is how long a connection closed as slow or flooding has to
	// take its close frame before its TCP connection is dropped; a client
	// that never reads would otherwise hold its writer for WriteWait.
	dropAfter = 2 * time.Second
	// floodSlots is the number of slots FloodWindow is counted in: the
	// window slides in steps of a tenth of itself.
	floodSlots = 10
)

// Close reasons of the limits that end a connection (1008).
const (
	reasonSlow  = "send queue full: client too slow"
	reasonFlood = "flooding: too many frames"
)

// floodMeter counts one connection's frames over the last FloodWindow. It
// is owned by the reader goroutine.
type floodMeter struct {
	start time.Time
	// slot is the length of one slot; limit the frames allowed within
	// the window.
	slot  time.Duration
	limit int
	// counts[i % floodSlots] is the number of frames of slot i; cur is
	// the newest slot counted and total the sum of counts.
	counts [floodSlots]int
	cur    int64
	total  int
}

func newFloodMeter(cfg Config, now time.Time) floodMeter {
	admitted := float64(cfg.FrameBurst) + cfg.FrameRate*cfg.FloodWindow.Seconds()
	return floodMeter{
		start: now,
		slot:  max(cfg.FloodWindow/floodSlots, time.Nanosecond),
		limit: int(math.Ceil(cfg.FloodFactor * admitted)),
	}
}

// add counts a frame received at now and reports whether the window now
// holds more frames than allowed.
func (m *floodMeter) add(now time.Time) bool {
	i := int64(now.Sub(m.start) / m.slot) // monotonic, so never negative
	if i > m.cur {
		for k := m.cur + 1; k <= i && k <= m.cur+floodSlots; k++ {
			m.total -= m.counts[k%floodSlots]
			m.counts[k%floodSlots] = 0
		}
		m.cur = i
	}
	m.counts[m.cur%floodSlots]++
	m.total++
	return m.total > m.limit
}

// admit counts one client frame of any kind and reports whether it may be
// handled. A frame beyond the rate is to be discarded unread; the first of
// each rateLimitedEvery is answered with rate_limited (without ref or room:
// the frame is not decoded). A flood closes the connection. It runs on the
// reader goroutine (the ping and pong handlers run there too).
func (c *Conn) admit() bool {
	now := time.Now()
	if c.flood.add(now) {
		c.kick(reasonFlood, &c.gw.hub.floods)
		return false
	}
	if c.limiter.AllowN(now, 1) {
		return true
	}
	if c.lastLimited.IsZero() || now.Sub(c.lastLimited) >= rateLimitedEvery {
		c.lastLimited = now
		wait := c.retryAfter(now)
		e := pipeline.Errorf(pipeline.CodeRateLimited, "too many frames: frames are dropped unread for the next %s", wait)
		e.RetryAfter = wait
		c.answerUnread(e)
	}
	return false
}

// retryAfter is the time until the limiter admits a frame again, rounded
// up to a millisecond.
func (c *Conn) retryAfter(now time.Time) time.Duration {
	missing := 1 - c.limiter.TokensAt(now)
	wait := time.Duration(missing / float64(c.limiter.Limit()) * float64(time.Second))
	return max(wait.Truncate(time.Millisecond)+time.Millisecond, time.Millisecond)
}

// kick closes the connection with 1008 and reason, counts it in counter
// (once), throws its queued frames away and drops its TCP connection after
// dropAfter if the close frame cannot be written by then.
func (c *Conn) kick(reason string, counter interface{ Add(int64) int64 }) {
	if !c.close(websocket.ClosePolicyViolation, reason, false) {
		return
	}
	counter.Add(1)
	// Counted (Hub.SlowDisconnects, ...) and logged at debug: an attack of
	// many such sockets must not flood the log.
	queuedBytes := c.queued.Load()
	frames := c.dropQueue()
	c.log.Debug("disconnecting client", "reason", reason, "queued_bytes", queuedBytes, "queued_frames", frames)
	// Closing a connection twice is harmless, so the timer need not be
	// stopped when the writer finishes first.
	time.AfterFunc(dropAfter, func() { _ = c.ws.NetConn().Close() })
}
