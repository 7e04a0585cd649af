// Package faillog reports a repeated failure loudly exactly once: one
// error line when it starts, a summary with counts at most once per
// interval while it lasts, and one line when it ends — never a line per
// failed frame, retry or request. A failure that keeps starting and ending
// (flapping) is loud at most once per interval too: a failure that starts
// within an interval of the last one written is not written, nor is its
// end, and the next failure written counts them.
package faillog

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEvery is the default interval of the summaries.
const DefaultEvery = 30 * time.Second

// Log tracks one kind of failure, possibly of several parts (partitions,
// rooms): it is failing while any part fails. It is safe for concurrent use
// and owns no goroutine; summaries are written by the calls that come due.
type Log struct {
	log   *slog.Logger
	what  string
	every time.Duration

	// mu guards the fields below.
	mu          sync.Mutex
	failing     map[string]bool
	since       time.Time
	failures    int64 // since the failure started
	unreported  int64 // failures since the last line
	lastLine    time.Time
	lastErr     error
	lastFailing int
	// lastStart is when the last failure written started; loud says
	// whether the current one was written (its start or a summary), so
	// that its end is; quiet counts the starts not written since the last
	// one that was.
	lastStart time.Time
	loud      bool
	quiet     int64

	// active mirrors len(failing) > 0, set under mu, for Active.
	active atomic.Bool
}

// New returns a Log that names the failure what ("backend writes",
// "feed subscription") in its lines; every <= 0 means DefaultEvery.
func New(log *slog.Logger, what string, every time.Duration) *Log {
	if every <= 0 {
		every = DefaultEvery
	}
	return &Log{log: log, what: what, every: every, failing: make(map[string]bool)}
}

// Fail records a failure of part ("" for a failure with no parts).
func (l *Log) Fail(part string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.lastErr = err
	l.failures++
	l.unreported++
	l.failing[part] = true
	l.active.Store(true)
	if len(l.failing) == 1 && l.failures == 1 {
		l.since = now
		if !l.lastStart.IsZero() && now.Sub(l.lastStart) < l.every {
			// Flapping: the last failure started less than an
			// interval ago. This one is written if it lasts.
			l.loud = false
			l.quiet++
			l.lastLine = now
			return
		}
		l.lastStart, l.lastLine, l.unreported, l.loud = now, now, 0, true
		if l.quiet > 0 {
			l.log.Error(l.what+" failing", "part", part, "err", err, "starts_not_logged", l.quiet)
		} else {
			l.log.Error(l.what+" failing", "part", part, "err", err)
		}
		l.quiet = 0
		return
	}
	if now.Sub(l.lastLine) >= l.every {
		l.log.Warn(l.what+" still failing", "failures", l.failures, "since_last", l.unreported,
			"parts_failing", len(l.failing), "for", now.Sub(l.since).Round(time.Second), "err", err)
		l.lastLine, l.unreported = now, 0
		l.loud = true // its end is written too
	}
}

// OK records that part works; when no part fails any more, the failure
// has ended and one line says so.
func (l *Log) OK(part string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing[part] {
		return
	}
	delete(l.failing, part)
	if len(l.failing) > 0 {
		return
	}
	l.active.Store(false)
	if l.loud {
		l.log.Info(l.what+" recovered", "failures", l.failures, "for", time.Since(l.since).Round(time.Millisecond))
	}
	l.failures, l.unreported = 0, 0
}

// Active reports, without taking the lock, whether any part fails: a
// caller that succeeds calls OK only then, so that a working path costs
// one atomic load. It is set and cleared together with the failure, so a
// success that reads it after a Fail always sees it.
func (l *Log) Active() bool { return l.active.Load() }

// Failing reports whether any part fails.
func (l *Log) Failing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.failing) > 0
}
