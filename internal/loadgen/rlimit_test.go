package loadgen

import (
	"errors"
	"testing"
)

// TestFilesNeeded: one descriptor per connection plus the headroom, and
// RaiseOpenFiles reports a limit it cannot meet.
func TestFilesNeeded(t *testing.T) {
	if got := FilesNeeded(Config{Conns: 1000, Senders: 10}); got != 1010+FileHeadroom {
		t.Errorf("FilesNeeded = %d, want %d", got, 1010+FileHeadroom)
	}
	limit, err := RaiseOpenFiles(1)
	if err != nil || limit < 1 {
		t.Fatalf("RaiseOpenFiles(1) = %d, %v", limit, err)
	}
	if limit < 1<<62 {
		if _, err := RaiseOpenFiles(1 << 62); !errors.Is(err, ErrTooFewFiles) {
			t.Errorf("RaiseOpenFiles(huge) = %v, want ErrTooFewFiles", err)
		}
	}
}
