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
// lines already say what is failing and when it recovers. So each kind of
// diagnostic (its format) is written the first time, and then at most once
// per Every, with repeated=N counting the lines held back since the last
// one written. Use a *ClientLogger; it is safe for concurrent use.
type ClientLogger struct {
	Log *slog.Logger
	// Every is the least time between two lines of one kind. Default
	// faillog.DefaultEvery.
	Every time.Duration

	// now is the clock (time.Now when nil; tests set it).
	now func() time.Time
	// mu guards kinds: per format, when a line was last written and how
	// many were held back since.
	mu    sync.Mutex
	kinds map[string]*heldLines
}

type heldLines struct {
	written time.Time
	held    int
}

// maxClientLogKinds bounds the formats a ClientLogger tracks; go-redis has
// a few dozen.
const maxClientLogKinds = 256

// Printf writes one go-redis diagnostic, or holds it back (see ClientLogger).
func (l *ClientLogger) Printf(ctx context.Context, format string, v ...any) {
	every := l.Every
	if every <= 0 {
		every = faillog.DefaultEvery
	}
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.mu.Lock()
	k := l.kinds[format]
	if k != nil && now.Sub(k.written) < every {
		k.held++
		l.mu.Unlock()
		return
	}
	if k == nil {
		if l.kinds == nil || len(l.kinds) >= maxClientLogKinds {
			l.kinds = make(map[string]*heldLines)
		}
		k = &heldLines{}
		l.kinds[format] = k
	}
	held := k.held
	k.written, k.held = now, 0
	l.mu.Unlock()
	if held > 0 {
		l.Log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis", "repeated", held)
		return
	}
	l.Log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
