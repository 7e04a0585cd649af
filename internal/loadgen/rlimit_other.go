//go:build !unix

package loadgen

// RaiseOpenFiles does nothing where there is no RLIMIT_NOFILE: it reports
// need as the limit and no error.
func RaiseOpenFiles(need uint64) (uint64, error) { return need, nil }
