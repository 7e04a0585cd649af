//go:build unix

package admission

import (
	"fmt"
	"syscall"
)

// openFileLimit returns the soft RLIMIT_NOFILE.
func openFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("admission: open-file limit: %w", err)
	}
	return uint64(l.Cur), nil
}
