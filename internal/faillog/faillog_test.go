package faillog_test

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
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
	// Bursts of failures for at least 110ms, the last one after it: the
	// bounds below hold however slowly the machine runs the loop.
	start := time.Now()
	n := 0
	for {
		late := time.Since(start) >= 110*time.Millisecond
		for range 10 {
			fl.Fail("", errors.New("down"))
			n++
		}
		if late {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	got := out.all()
	// One start line, then at most one summary per 20ms (at least one, as
	// failures went on past it); never one per failure.
	most := 1 + int(elapsed/(20*time.Millisecond))
	if len(got) < 2 || len(got) > most || len(got) >= n {
		t.Fatalf("%d lines for %d failures over %v at a 20ms interval, want 2 to %d: %q", len(got), n, elapsed, most, got)
	}
	for _, l := range got[1:] {
		if !strings.Contains(l, "still failing") {
			t.Fatalf("summary line %q", l)
		}
	}
}

// TestActiveFollowsFailing: Active, read without the lock, says what
// Failing says once the calls are done, however failures and successes
// interleave; so a caller that calls OK only when Active never leaves the
// log failing after it works again.
func TestActiveFollowsFailing(t *testing.T) {
	t.Parallel()
	fl := faillog.New(slog.New(slog.DiscardHandler), "moderator", time.Hour)
	boom := errors.New("boom")
	succeed := func() {
		if fl.Active() {
			fl.OK("")
		}
	}
	for range 2000 {
		var wg sync.WaitGroup
		wg.Go(func() { fl.Fail("", boom) })
		for range 3 {
			wg.Go(succeed)
		}
		wg.Wait()
		if fl.Active() != fl.Failing() {
			t.Fatalf("Active() = %v, Failing() = %v", fl.Active(), fl.Failing())
		}
		succeed()
		if fl.Failing() {
			t.Fatal("still failing after a success")
		}
	}
}

// TestFlappingLoudOncePerInterval: a failure that keeps starting and ending
// writes one failing line and one recovered line per interval, not one per
// start; the next failing line after the interval counts the starts not
// written.
func TestFlappingLoudOncePerInterval(t *testing.T) {
	t.Parallel()
	out := &lines{}
	const every = time.Second
	fl := faillog.New(slog.New(slog.NewTextHandler(out, nil)), "ingress shards", every)
	boom := errors.New("boom")
	start := time.Now()
	for range 50 {
		fl.Fail("7", boom)
		fl.OK("7")
	}
	if d := time.Since(start); d >= every {
		t.Fatalf("50 flaps took %v, more than the interval the test needs them within", d)
	}
	got := out.all()
	if len(got) != 2 || !strings.Contains(got[0], "ingress shards failing") || !strings.Contains(got[1], "ingress shards recovered") {
		t.Fatalf("log lines = %q, want one failing and one recovered for 50 flaps within an interval", got)
	}
	time.Sleep(every)
	fl.Fail("7", boom)
	got = out.all()
	if len(got) != 3 || !strings.Contains(got[2], "ingress shards failing") || !strings.Contains(got[2], "starts_not_logged=49") {
		t.Fatalf("log lines = %q, want a third, failing with starts_not_logged=49", got)
	}
}
