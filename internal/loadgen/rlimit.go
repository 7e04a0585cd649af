package loadgen

import "errors"

// FileHeadroom is the number of descriptors RaiseOpenFiles keeps for
// everything but the run's sockets: standard streams, the Go runtime's
// poller, /proc reads and connections being dialled.
const FileHeadroom = 64

// ErrTooFewFiles is wrapped by RaiseOpenFiles when the open-file limit is
// below what a run needs even after raising it.
var ErrTooFewFiles = errors.New("loadgen: open-file limit too low")

// FilesNeeded returns the descriptors a run of cfg needs: one per
// connection plus FileHeadroom.
func FilesNeeded(cfg Config) uint64 {
	return uint64(cfg.Conns+cfg.Senders) + FileHeadroom
}
