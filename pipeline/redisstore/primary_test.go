package redisstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestPrimaryWatchCountsChanges: the first address dialed is no change,
// the same one again is none, and each dial to another address is one,
// logged once with where from and to.
func TestPrimaryWatchCountsChanges(t *testing.T) {
	var logs bytes.Buffer
	w := &primaryWatch{log: slog.New(slog.NewTextHandler(&logs, nil))}
	steps := []struct {
		addr string
		want uint64
	}{
		{"10.0.0.1:6379", 0},
		{"10.0.0.1:6379", 0},
		{"10.0.0.2:6379", 1},
		{"10.0.0.2:6379", 1},
		{"10.0.0.1:6379", 2},
	}
	for i, s := range steps {
		w.dialed(s.addr)
		if got := w.Changes(); got != s.want {
			t.Fatalf("after dial %d (%s): %d changes, want %d", i, s.addr, got, s.want)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "from=10.0.0.1:6379 to=10.0.0.2:6379") ||
		!strings.Contains(lines[1], "from=10.0.0.2:6379 to=10.0.0.1:6379") {
		t.Fatalf("logged %q, want one line per change naming both addresses", lines)
	}
}
