package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/chatstream/chatstream/internal/faillog"
)

// quietCancel is a Watermill logger that reports errors caused by a
// cancelled context (a subscription being stopped), and the end of a
// subscription after a read error, at debug level.
type quietCancel struct {
	watermill.LoggerAdapter
}

func (q quietCancel) Error(msg string, err error, fields watermill.LogFields) {
	// A subscription stopped by a read error is reported by its caller,
	// which resubscribes (pipeline.Delivery).
	if errors.Is(err, context.Canceled) || msg == "stop reading after error" {
		q.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietCancel) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietCancel{q.LoggerAdapter.With(fields)}
}

// ClientLogger adapts log for go-redis's own diagnostics
// (redis.SetLogger), so that they are written like every other line (JSON
// with --log-format json) at warn level, with component=go-redis.
//
// A failure is loud once, not once per retry: during an outage go-redis
// reports every failed dial, several times a second, while chatstream's own
// lines already say what is failing and when it recovers. So a diagnostic
// is written the first time, and the same line again at most once per
// Every, with repeated=N counting the copies held back meanwhile. Copies
// held back that then stopped for longer than Every (the failure ended)
// are not counted into a later line; chatstream's own lines report the
// failure's end. Use a *ClientLogger; it is safe for concurrent use.
type ClientLogger struct {
	Log *slog.Logger
	// Every is the least time between two copies of one line. Default
	// faillog.DefaultEvery.
	Every time.Duration

	// now is the clock (time.Now when nil; tests set it).
	now func() time.Time
	// mu guards lines: per line, when it was last written, and the
	// copies held back since and when the last of them came.
	mu    sync.Mutex
	lines map[string]*heldLines
}

type heldLines struct {
	written, lastHeld time.Time
	held              int
}

// maxClientLogLines bounds the distinct lines a ClientLogger tracks; when
// it is reached they are forgotten (and written again when they recur).
const maxClientLogLines = 256

// Printf writes one go-redis diagnostic, or holds it back (see ClientLogger).
func (l *ClientLogger) Printf(ctx context.Context, format string, v ...any) {
	if !l.Log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	every := l.Every
	if every <= 0 {
		every = faillog.DefaultEvery
	}
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	// Lines, not formats, are told apart: go-redis writes many different
	// diagnostics through one "%s", and one format names different nodes.
	line := fmt.Sprintf(format, v...)
	l.mu.Lock()
	k := l.lines[line]
	if k != nil && now.Sub(k.written) < every {
		k.held++
		k.lastHeld = now
		l.mu.Unlock()
		return
	}
	if k == nil {
		if l.lines == nil || len(l.lines) >= maxClientLogLines {
			l.lines = make(map[string]*heldLines)
		}
		k = &heldLines{}
		l.lines[line] = k
	}
	held := k.held
	if now.Sub(k.lastHeld) > every {
		held = 0 // those repeats ended long ago: not this line's
	}
	k.written, k.held = now, 0
	l.mu.Unlock()
	if held > 0 {
		l.Log.WarnContext(ctx, line, "component", "go-redis", "repeated", held)
		return
	}
	l.Log.WarnContext(ctx, line, "component", "go-redis")
}
