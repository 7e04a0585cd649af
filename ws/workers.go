package ws

import (
	"context"
	"sync"
	"sync/atomic"
)

// maxIdleWorkers bounds the worker goroutines kept waiting for frames to
// handle: enough for the frames handled at once on a busy instance, few
// enough that their stacks (a few KiB to tens of KiB each) do not matter
// next to the connections'.
const maxIdleWorkers = 64

// maxIdleWriters bounds the goroutines kept waiting to run a connection's
// writer: a fan-out to a room of 1,000 starts up to 1,000 writers at once,
// and a waiting goroutine holds a stack of 2-8 KiB, so at most 8 MiB for
// the whole instance.
const maxIdleWriters = 1024

// maxIdleAckers bounds the goroutines kept waiting to run a connection's
// acker, which runs while a sender's sends wait for the store.
const maxIdleAckers = 256

// pool runs fn on the values started on it, on goroutines that outlive one
// value. A new goroutine starts with the smallest stack, and one that needs
// more copies its stack as it grows; handing the next value to a goroutine
// that has run fn before keeps its grown stack. Handling a frame (decoding,
// the pipeline's chain, reading history, encoding) takes several times the
// stack of a reader waiting for the next one, and writing a batch to a
// socket more than a new goroutine has: run on a new goroutine each, they
// spent 5-6% of the server's CPU copying stacks at 10,000 sends a second,
// and the writers 5-13% on 800 messages a second to a room of 100. (The
// acker, which waits for a send to be stored, grows its stack once a send
// otherwise.)
//
// A value goes to the goroutine that began waiting last, when one waits,
// else to a new one. A goroutine waits for the next value unless maxIdle
// already wait, and the waiting ones end when ctx is done. Each waits on a
// channel of its own: a select on a shared one and on ctx cost a fan-out of
// small messages (R) more than the `go` statement it replaces.
type pool[T comparable] struct {
	fn      func(T)
	maxIdle int
	alive   atomic.Int32 // goroutines, waiting or running fn
	spawned atomic.Int64 // goroutines started, ever

	mu      sync.Mutex
	idle    []chan T // the waiting goroutines' channels, the latest last
	stopped bool     // ctx is done: no goroutine waits any more
}

// newPool returns a pool that runs fn. The zero T tells a waiting
// goroutine to end, so it is never started.
func newPool[T comparable](ctx context.Context, fn func(T), maxIdle int) *pool[T] {
	p := &pool[T]{fn: fn, maxIdle: maxIdle}
	context.AfterFunc(ctx, p.stop)
	return p
}

// start runs fn(v) on a goroutine of the pool, without waiting for it.
func (p *pool[T]) start(v T) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ch := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		ch <- v // buffered: never blocks
		return
	}
	p.mu.Unlock()
	p.alive.Add(1)
	p.spawned.Add(1)
	go p.run(v)
}

// run runs fn(v), then fn of the values handed to it while it waits.
func (p *pool[T]) run(v T) {
	defer p.alive.Add(-1)
	var ch chan T
	var zero T
	for v != zero {
		p.fn(v)
		p.mu.Lock()
		if p.stopped || len(p.idle) >= p.maxIdle {
			p.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan T, 1)
		}
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		v = <-ch
	}
}

// stop ends the waiting goroutines, and makes those running fn end after
// it.
func (p *pool[T]) stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var zero T
	for _, ch := range idle {
		ch <- zero
	}
}

// workers handles connections' frames on a pool. A connection's reader
// spends almost all its life waiting for the next frame, which takes
// little stack; handling each aside keeps every idle reader's stack small.
type workers struct {
	p *pool[*job]
}

// job is one function to run, and the signal that it ran.
type job struct {
	fn  func()
	end chan struct{} // buffered: the worker does not wait for the caller
}

var jobPool = sync.Pool{New: func() any { return &job{end: make(chan struct{}, 1)} }}

func newWorkers(ctx context.Context) *workers {
	return &workers{p: newPool(ctx, runJob, maxIdleWorkers)}
}

func runJob(j *job) {
	j.fn()
	j.end <- struct{}{}
}

// do runs fn on a worker and waits for it.
func (w *workers) do(fn func()) {
	j := jobPool.Get().(*job)
	j.fn = fn
	w.p.start(j)
	<-j.end
	j.fn = nil
	jobPool.Put(j)
}
