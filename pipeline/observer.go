package pipeline

import (
	"context"
	"time"
)

// Observer is told of the pipeline events an operator measures; package
// metrics turns them into Prometheus metrics. Counters the pipeline keeps
// anyway (Stats) are read from it instead. Methods are called from the
// pipeline's goroutines: they must be safe for concurrent use, fast, and
// must not block.
type Observer interface {
	// AppendDone reports one append that completed after d (from the
	// moment it was queued for the store); err is its failure or nil.
	AppendDone(d time.Duration, err error)
	// BackendError reports a failed backend operation, op being one of
	// the Op constants.
	BackendError(op string)
}

// Backend operations named by Observer.BackendError.
const (
	// OpAppend is storing a message (Store.AppendAsync).
	OpAppend = "append"
	// OpSubscribe is opening a partition's feed subscription.
	OpSubscribe = "subscribe"
	// OpFeedRead is a feed subscription that ended by itself (its reads
	// failed); the delivery subscribes again.
	OpFeedRead = "feed_read"
	// OpDeadLetter is recording a rejected message.
	OpDeadLetter = "dead_letter"
	// OpInstanceRecord is writing this instance's record.
	OpInstanceRecord = "instance_record"
	// OpBusState is reading what a partition's feed holds (the gap check,
	// and the lag metric).
	OpBusState = "bus_state"
	// OpHistory is reading a room's history for a join or history
	// request.
	OpHistory = "history"
	// OpPing is the readiness check's probe of the backend.
	OpPing = "ping"
)

// Ops returns every Op constant, in a stable order.
func Ops() []string {
	return []string{OpAppend, OpSubscribe, OpFeedRead, OpDeadLetter, OpInstanceRecord, OpBusState, OpHistory, OpPing}
}

// BusLagger counts the entries of a partition's feed after a position. A
// BusStater may implement it; then an operator can see how far an instance
// is behind each bus. Implementations are safe for concurrent use.
type BusLagger interface {
	// BusLags returns, for each partition p < len(after), the number of
	// entries of its feed after the seq after[p] ("" counts them all),
	// counting at most limit per partition.
	BusLags(ctx context.Context, after []string, limit int64) ([]int64, error)
}

// observeError tells o, when set, of a failed backend operation.
func observeError(o Observer, op string) {
	if o != nil {
		o.BackendError(op)
	}
}
