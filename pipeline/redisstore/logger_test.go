package redisstore

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestClientLoggerHoldsRepeats proves that go-redis's diagnostics are loud
// once, not once per retry: a diagnostic repeated during an outage is
// written the first time, then held back until Every has passed, when one
// line counts the repeats; another kind of diagnostic is written at once.
func TestClientLoggerHoldsRepeats(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	clock := time.Unix(1_700_000_000, 0)
	l := &ClientLogger{Log: slog.New(slog.NewTextHandler(&buf, nil)), Every: 30 * time.Second,
		now: func() time.Time { return clock }}
	lines := func() []string { return strings.Split(strings.TrimSpace(buf.String()), "\n") }
	ctx := context.Background()
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 100 {
		l.Printf(ctx, dial, 5, "connection refused")
		clock = clock.Add(100 * time.Millisecond) // 10 s in all
	}
	l.Printf(ctx, "sentinel: new master=%q", "10.0.0.2:6379")
	got := lines()
	if len(got) != 2 || !strings.Contains(got[0], "failed to dial after 5 attempts") || !strings.Contains(got[0], "component=go-redis") ||
		strings.Contains(got[0], "repeated") || !strings.Contains(got[1], "new master") {
		t.Fatalf("got lines %q, want the first dial failure and the sentinel line", got)
	}
	clock = clock.Add(20 * time.Second) // 30 s after the first line
	l.Printf(ctx, dial, 5, "connection refused")
	got = lines()
	if len(got) != 3 || !strings.Contains(got[2], "failed to dial") || !strings.Contains(got[2], "repeated=99") {
		t.Fatalf("got lines %q, want a third line counting the 99 held back", got)
	}

	// Lines, not formats, are told apart: go-redis writes many kinds
	// through "%s", and one format names different nodes.
	l.Printf(ctx, "%s", "circuit breaker opened for endpoint a")
	l.Printf(ctx, "%s", "handoff failed for endpoint a")
	l.Printf(ctx, "sentinel: new master=%q", "10.0.0.3:6379")
	if got = lines(); len(got) != 6 {
		t.Fatalf("got lines %q, want each distinct line written", got)
	}

	// Copies held back during a failure that then ended are not counted
	// into the line of a later one.
	clock = clock.Add(31 * time.Second)
	l.Printf(ctx, dial, 5, "connection refused") // written
	l.Printf(ctx, dial, 5, "connection refused") // held
	clock = clock.Add(time.Hour)
	l.Printf(ctx, dial, 5, "connection refused")
	got = lines()
	if len(got) != 8 || strings.Contains(got[7], "repeated") {
		t.Fatalf("got lines %q, want the line of the later failure without the earlier repeat", got)
	}
}
