package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
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
type ClientLogger struct {
	Log *slog.Logger
}

// Printf writes one go-redis diagnostic.
func (l ClientLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
