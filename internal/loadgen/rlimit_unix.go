//go:build unix

package loadgen

import (
	"fmt"
	"syscall"
)

// RaiseOpenFiles raises this process's soft RLIMIT_NOFILE to its hard
// limit and returns the resulting soft limit; if that is below need, the
// error wraps ErrTooFewFiles and says how to raise it. The Go runtime
// already raises the soft limit at start on most systems; this makes it
// explicit and checks it.
func RaiseOpenFiles(need uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("loadgen: open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		raised := l
		raised.Cur = raised.Max
		// Where the hard limit is "unlimited" but the kernel caps it lower
		// (macOS), raising fails; the check below then reports the limit.
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			l = raised
		}
	}
	if uint64(l.Cur) < need {
		return uint64(l.Cur), fmt.Errorf("%w: the run needs %d open files (its connections plus %d), the limit is %d (hard limit %d): raise the hard limit (ulimit -Hn as root, LimitNOFILE= under systemd, --ulimit nofile= in Docker) or open fewer connections",
			ErrTooFewFiles, need, FileHeadroom, l.Cur, l.Max)
	}
	return uint64(l.Cur), nil
}
