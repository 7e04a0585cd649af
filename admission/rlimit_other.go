//go:build !unix

package admission

import "errors"

// openFileLimit reports that this system has no RLIMIT_NOFILE.
func openFileLimit() (uint64, error) {
	return 0, errors.New("admission: no open-file limit on this system")
}
