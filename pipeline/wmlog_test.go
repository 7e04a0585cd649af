package pipeline_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/chatstream/chatstream/pipeline"
)

// TestWatermillLoggerLevels proves that WatermillLogger writes Watermill's
// info lines at debug level, writes each line only at a level its logger
// writes, keeps the fields of With, and builds nothing for a line it does
// not write (Watermill's Pub/Subs log a trace line per message).
func TestWatermillLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	info := pipeline.WatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	fields := watermill.LogFields{"topic": "chat.p01", "message_uuid": "u-1"}
	info.Info("subscribed", fields)
	info.Debug("debug line", fields)
	info.Trace("trace line", fields)
	info.With(fields).Error("read failed", errors.New("boom"), nil)
	out := buf.String()
	if strings.Contains(out, "subscribed") || strings.Contains(out, "debug line") || strings.Contains(out, "trace line") {
		t.Errorf("an info logger wrote a line below info:\n%s", out)
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "boom") || !strings.Contains(out, "topic=chat.p01") {
		t.Errorf("the error line with With's fields is missing:\n%s", out)
	}
	if n := testing.AllocsPerRun(100, func() { info.Trace("trace line", fields) }); n != 0 {
		t.Errorf("a trace line an info logger does not write allocates %v times, want 0", n)
	}

	buf.Reset()
	debug := pipeline.WatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	debug.Info("subscribed", fields)
	debug.Trace("trace line", fields)
	out = buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "subscribed") || !strings.Contains(out, "message_uuid=u-1") {
		t.Errorf("a debug logger did not write the info line at debug:\n%s", out)
	}
	if strings.Contains(out, "trace line") {
		t.Errorf("a debug logger wrote a trace line:\n%s", out)
	}
}
