package ws

import (
	"sync"
	"sync/atomic"
)

// maxIdleWorkers bounds the worker goroutines kept waiting for work: enough
// for the frames handled at once on a busy instance, few enough that their
// stacks (a few KiB to tens of KiB each) do not matter next to the
// connections'.
const maxIdleWorkers = 64

// workers handles connections' frames on goroutines that outlive one frame.
// A connection's reader spends almost all its life waiting for the next
// frame, which takes little stack; handling a frame (decoding, the
// pipeline's chain, reading history, encoding) takes several times more.
// Handling it aside keeps every idle reader's stack small, and handing it to
// a goroutine that has handled frames before keeps that goroutine's grown
// stack: a new goroutine per frame would start small and copy its stack as
// it grows, every frame (5-6% of the server's CPU at 10,000 sends a second).
// (A connection's writer is not run here: its stack stays small, and a new
// goroutine costs no more than waking a waiting one.)
//
// A job goes to a waiting worker when there is one, else to a new one. A
// worker waits for the next job unless maxIdleWorkers already wait, and ends
// when done is closed (the gateway's context is done).
type workers struct {
	jobs chan *job
	idle atomic.Int32
	done <-chan struct{}
}

// job is one function to run, and the signal that it ran.
type job struct {
	fn  func()
	end chan struct{} // buffered: the worker does not wait for the caller
}

var jobPool = sync.Pool{New: func() any { return &job{end: make(chan struct{}, 1)} }}

func newWorkers(done <-chan struct{}) *workers {
	return &workers{jobs: make(chan *job), done: done}
}

// do runs fn on a worker and waits for it.
func (w *workers) do(fn func()) {
	j := jobPool.Get().(*job)
	j.fn = fn
	select {
	case w.jobs <- j: // a waiting worker
	default:
		go w.run(j)
	}
	<-j.end
	j.fn = nil
	jobPool.Put(j)
}

// run runs j, then the jobs handed to it while it waits.
func (w *workers) run(j *job) {
	for {
		j.fn()
		j.end <- struct{}{}
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case j = <-w.jobs:
			w.idle.Add(-1)
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}
