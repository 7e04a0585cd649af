package ws

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxIdleWorkers bounds the worker goroutines kept waiting for frames to
// handle: enough for the frames handled at once on a busy instance, few
// enough that their stacks (a few KiB to tens of KiB each) do not matter
// next to the connections'.
const maxIdleWorkers = 64

// maxIdleWriters bounds the goroutines kept waiting to run a connection's
// writer. Writers run on at most maxRunningWriters goroutines, and on more
// only while writes stall (to peers that stopped reading, until the pinger
// cuts them); a waiting goroutine holds a stack of 2-8 KiB, so at most
// 8 MiB for the whole instance.
const maxIdleWriters = 1024

// maxRunningWriters bounds the goroutines running connections' writers at
// once, past those whose write has stalled (writerStall): enough that
// independent writes (acks, deliveries to rooms of a few) rarely wait for
// a place, few enough that a fan-out to a room of 1,000 wakes that many
// goroutines instead of 1,000. On B (1,000 receivers, 50 messages a
// second, two processors) the server used 43-48% of a core at a bound of
// 32 against 48-58% unbounded; a bound of 4 made P's p99 worse.
func maxRunningWriters() int { return max(32, 16*runtime.GOMAXPROCS(0)) }

// writerStall is how long a writer may run before it lends its place to a
// writer waiting for one. A write to a healthy socket takes microseconds,
// and one to a peer that stopped reading blocks until the pinger cuts it
// (WriteWait); but a writer that waits for a processor looks the same, so
// the period is long against a busy machine's scheduling delays. Places
// are only short when a bound's worth of writes block at once.
const writerStall = 10 * time.Millisecond

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
//
// A pool may bound the goroutines running fn at once (bounded). A value
// started beyond the bound waits in a FIFO, and a goroutine that finishes
// fn takes the next one from it instead of waiting to be handed one: a
// fan-out to a room of 1,000 then runs on a few goroutines instead of
// waking 1,000. A call of fn that blocks (a write to a socket whose peer
// stopped reading) must not hold the values behind it: a call that has
// run for a stall period or more lends its place to another goroutine,
// checked every stall period while values wait, until the call ends.
type pool[T comparable] struct {
	fn      func(T)
	maxIdle int
	alive   atomic.Int32 // goroutines, waiting or running fn
	spawned atomic.Int64 // goroutines started, ever

	mu      sync.Mutex
	idle    []*poolWorker[T] // the waiting goroutines, the latest last
	stopped bool             // ctx is done: no goroutine waits any more

	// maxRunning bounds running (0: no bound); pending[head:] are the
	// values waiting for a goroutine, oldest first.
	maxRunning int
	running    int
	pending    []T
	head       int
	// busy holds the goroutines running fn, for the stall check, which
	// runs every stall while values wait (watching). stalled counts the
	// busy ones whose call a check found stalled: each lends its place
	// until its call ends.
	busy     map[*poolWorker[T]]struct{}
	stalled  int
	stall    time.Duration
	watch    *time.Timer
	watching bool
	lent     atomic.Int64 // places lent past the bound, ever
}

// poolWorker is one goroutine of a pool. Its fields are guarded by the
// pool's mu.
type poolWorker[T comparable] struct {
	ch      chan T // buffered: the next value, or the zero T to end
	calls   uint64 // calls of fn begun
	seen    uint64 // calls at the last stall check
	stalled bool   // the current call was found stalled (counted in pool.stalled)
}

// newPool returns a pool that runs fn. The zero T tells a waiting
// goroutine to end, so it is never started.
func newPool[T comparable](ctx context.Context, fn func(T), maxIdle int) *pool[T] {
	p := &pool[T]{fn: fn, maxIdle: maxIdle}
	context.AfterFunc(ctx, p.stop)
	return p
}

// bounded returns a pool that runs fn on at most maxRunning goroutines at
// once, but for calls that have run for stall or longer.
func bounded[T comparable](ctx context.Context, fn func(T), maxIdle, maxRunning int, stall time.Duration) *pool[T] {
	p := newPool(ctx, fn, maxIdle)
	p.maxRunning, p.stall = maxRunning, stall
	p.busy = make(map[*poolWorker[T]]struct{})
	return p
}

// start runs fn(v) on a goroutine of the pool, without waiting for it.
func (p *pool[T]) start(v T) {
	var zero T
	if v == zero {
		return // it would end the goroutine it was handed to
	}
	p.mu.Lock()
	if p.maxRunning > 0 && p.running >= p.maxRunning+p.stalled {
		if p.head > 0 && len(p.pending) == cap(p.pending) {
			// Full, with taken values at its front: move the waiting
			// ones there rather than grow an array that never drains.
			n := copy(p.pending, p.pending[p.head:])
			clear(p.pending[n:])
			p.pending, p.head = p.pending[:n], 0
		}
		p.pending = append(p.pending, v)
		if !p.watching {
			p.watching = true
			p.markSeenLocked()
			if p.watch == nil {
				p.watch = time.AfterFunc(p.stall, p.checkStall)
			} else {
				p.watch.Reset(p.stall)
			}
		}
		p.mu.Unlock()
		return
	}
	w := p.claimLocked()
	p.mu.Unlock()
	p.hand(w, v)
}

// claimLocked takes a place for a call: a waiting goroutine, or a new
// worker whose goroutine hand starts. p.mu must be held. The value is
// handed over once p.mu is released: waking a goroutine can wake a
// processor, a system call that must not lengthen the critical section.
func (p *pool[T]) claimLocked() *poolWorker[T] {
	p.running++
	var w *poolWorker[T]
	if n := len(p.idle); n > 0 {
		w = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	} else {
		w = &poolWorker[T]{}
	}
	p.beginLocked(w)
	return w
}

// hand runs fn(v) on w, which claimLocked returned.
func (p *pool[T]) hand(w *poolWorker[T], v T) {
	if w.ch != nil {
		w.ch <- v // a waiting goroutine's: buffered and empty, never blocks
		return
	}
	p.alive.Add(1)
	p.spawned.Add(1)
	go p.run(w, v)
}

// beginLocked marks w as beginning a call of fn. p.mu must be held.
func (p *pool[T]) beginLocked(w *poolWorker[T]) {
	w.calls++
	if p.busy != nil {
		p.busy[w] = struct{}{}
	}
}

// run runs fn(v), then the values that wait or are handed to it.
func (p *pool[T]) run(w *poolWorker[T], v T) {
	defer p.alive.Add(-1)
	var zero T
	for v != zero {
		p.fn(v)
		p.mu.Lock()
		if w.stalled {
			w.stalled = false
			p.stalled--
		}
		if p.head < len(p.pending) {
			v = p.takeLocked()
			w.calls++
			p.mu.Unlock()
			// Let the goroutines that wait for a processor run between
			// two writers: one that never parks keeps its processor for
			// a whole time slice (10 ms) before it is preempted, and
			// the sends behind it wait that long.
			runtime.Gosched()
			continue
		}
		p.running--
		delete(p.busy, w)
		if p.stopped || len(p.idle) >= p.maxIdle {
			p.mu.Unlock()
			return
		}
		if w.ch == nil {
			w.ch = make(chan T, 1)
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		v = <-w.ch
	}
}

// takeLocked takes the oldest pending value. p.mu must be held, and a
// value must wait.
func (p *pool[T]) takeLocked() T {
	var zero T
	v := p.pending[p.head]
	p.pending[p.head] = zero
	p.head++
	if p.head == len(p.pending) {
		// Drained: keep a small array for the next burst, not a large one.
		if cap(p.pending) > maxKeptPending {
			p.pending = nil
		} else {
			p.pending = p.pending[:0]
		}
		p.head = 0
	}
	return v
}

// maxKeptPending is the largest pending array a pool keeps once drained.
const maxKeptPending = 4096

// markSeenLocked notes every running call as seen by a stall check. p.mu
// must be held.
func (p *pool[T]) markSeenLocked() {
	for w := range p.busy {
		w.seen = w.calls
	}
}

// checkStall runs every stall period while values wait. A call that was
// running at the previous check, and still is, has run for a stall
// period or more: for each, one more value runs past the bound until the
// call ends, waiting ones at once.
func (p *pool[T]) checkStall() {
	p.mu.Lock()
	if p.head == len(p.pending) {
		p.watching = false
		p.mu.Unlock()
		return
	}
	for w := range p.busy {
		if !w.stalled && w.calls == w.seen {
			w.stalled = true
			p.stalled++
		}
	}
	p.markSeenLocked()
	type claim struct {
		w *poolWorker[T]
		v T
	}
	var lent []claim
	for p.head < len(p.pending) && p.running < p.maxRunning+p.stalled {
		v := p.takeLocked()
		lent = append(lent, claim{p.claimLocked(), v})
	}
	p.lent.Add(int64(len(lent)))
	p.watch.Reset(p.stall)
	p.mu.Unlock()
	for _, c := range lent {
		p.hand(c.w, c.v)
	}
}

// stop ends the waiting goroutines, and makes those running fn end after
// it and the values still pending.
func (p *pool[T]) stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var zero T
	for _, w := range idle {
		w.ch <- zero
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
