package admission

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// refusalLog writes refusals in aggregate: the first refusal after a quiet
// interval is logged at once, later ones are counted and written as one
// line when the interval since the last line has passed, so a flood of
// refused requests costs at most one line per interval.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration

	// mu guards the fields below.
	mu       sync.Mutex
	pending  [numReasons]uint64
	lastAddr netip.Addr
	last     time.Time // when the last line was written
	// timer writes the pending counts when it fires; it is armed only
	// while there are pending counts, and fires once.
	timer *time.Timer
}

func newRefusalLog(log *slog.Logger, every time.Duration) *refusalLog {
	return &refusalLog{log: log, every: every}
}

// add counts one refusal of a request from addr.
func (l *refusalLog) add(reason Reason, addr netip.Addr) {
	l.mu.Lock()
	l.pending[reason]++
	l.lastAddr = addr
	if l.timer != nil { // a line is due already
		l.mu.Unlock()
		return
	}
	wait := l.every - time.Since(l.last)
	if wait > 0 {
		l.timer = time.AfterFunc(wait, l.flush)
		l.mu.Unlock()
		return
	}
	counts, last := l.takeLocked()
	l.mu.Unlock()
	l.write(counts, last)
}

// flush writes the pending counts, if any, now.
func (l *refusalLog) flush() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop() // a no-op when flush is the timer's own call
		l.timer = nil
	}
	counts, last := l.takeLocked()
	l.mu.Unlock()
	l.write(counts, last)
}

// takeLocked returns and clears the pending counts; l.mu must be held.
func (l *refusalLog) takeLocked() ([numReasons]uint64, netip.Addr) {
	counts, last := l.pending, l.lastAddr
	l.pending = [numReasons]uint64{}
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total > 0 {
		l.last = time.Now()
	}
	return counts, last
}

func (l *refusalLog) write(counts [numReasons]uint64, last netip.Addr) {
	var total uint64
	attrs := make([]any, 0, 2*(int(numReasons)+2))
	for r, n := range counts {
		total += n
		if n > 0 {
			attrs = append(attrs, Reason(r).String(), n)
		}
	}
	if total == 0 {
		return
	}
	attrs = append(attrs, "refused", total, "last_addr", last.String())
	l.log.Warn("websocket upgrades refused", attrs...)
}
