package pipeline

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// WatermillLogger adapts log for Watermill's components. Their info lines
// (subscriptions opened and closed) are written at debug level, and a line
// at a level log does not write costs nothing: Watermill's own slog adapter
// converts the fields of every line first, and its Pub/Sub components log
// a trace line per message. A nil log means slog.Default().
func WatermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	if log == nil {
		log = slog.Default()
	}
	return gatedLogger{
		log:   log,
		inner: watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
	}
}

// gatedLogger passes a line to inner only when log writes its level.
type gatedLogger struct {
	log   *slog.Logger
	inner watermill.LoggerAdapter
}

func (g gatedLogger) on(level slog.Level) bool { return g.log.Enabled(context.Background(), level) }

func (g gatedLogger) Error(msg string, err error, fields watermill.LogFields) {
	if g.on(slog.LevelError) {
		g.inner.Error(msg, err, fields)
	}
}

func (g gatedLogger) Info(msg string, fields watermill.LogFields) {
	if g.on(slog.LevelDebug) { // written at debug, see WatermillLogger
		g.inner.Info(msg, fields)
	}
}

func (g gatedLogger) Debug(msg string, fields watermill.LogFields) {
	if g.on(slog.LevelDebug) {
		g.inner.Debug(msg, fields)
	}
}

func (g gatedLogger) Trace(msg string, fields watermill.LogFields) {
	if g.on(watermill.LevelTrace) {
		g.inner.Trace(msg, fields)
	}
}

func (g gatedLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return gatedLogger{log: g.log, inner: g.inner.With(fields)}
}
