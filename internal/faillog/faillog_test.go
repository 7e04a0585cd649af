package faillog_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/faillog"
	"github.com/chatstream/chatstream/internal/syncbuf"
)

// lines is a concurrency-safe log buffer.
type lines struct{ syncbuf.Buffer }

func (l *lines) all() []string {
	return strings.Split(strings.TrimSpace(l.String()), "\n")
}

func TestLoudOnce(t *testing.T) {
	t.Parallel()
	out := &lines{}
	fl := faillog.New(slog.New(slog.NewTextHandler(out, nil)), "backend writes", time.Hour)
	boom := errors.New("boom")
	for range 1000 {
		fl.Fail("p1", boom)
		fl.Fail("p2", boom)
	}
	if !fl.Failing() {
		t.Fatal("Failing() = false during failures")
	}
	fl.OK("p1")
	fl.OK("p1") // twice: no effect
	if !fl.Failing() {
		t.Fatal("Failing() = false while p2 still fails")
	}
	fl.OK("p2")
	fl.OK("p3") // never failed: no line
	got := out.all()
	if len(got) != 2 || !strings.Contains(got[0], "backend writes failing") || !strings.Contains(got[1], "backend writes recovered") || !strings.Contains(got[1], "failures=2000") {
		t.Fatalf("log lines = %q, want one failing and one recovered with failures=2000", got)
	}
	if fl.Failing() {
		t.Fatal("Failing() = true after every part recovered")
	}
}

func TestSummaryPerInterval(t *testing.T) {
	t.Parallel()
	out := &lines{}
	fl := faillog.New(slog.New(slog.NewTextHandler(out, nil)), "feed subscription", 20*time.Millisecond)
	deadline := time.Now().Add(110 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		fl.Fail("", errors.New("down"))
		n++
		time.Sleep(time.Millisecond)
	}
	got := out.all()
	// One start line and about one summary per 20ms; never one per failure.
	if len(got) < 2 || len(got) > 8 || len(got) >= n {
		t.Fatalf("%d lines for %d failures over 110ms at a 20ms interval: %q", len(got), n, got)
	}
	for _, l := range got[1:] {
		if !strings.Contains(l, "still failing") {
			t.Fatalf("summary line %q", l)
		}
	}
}
