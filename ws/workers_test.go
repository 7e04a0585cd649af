package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// goroutinesCreated reads how many goroutines the process has created.
func goroutinesCreated(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime metric %s is not supported", s[0].Name)
	}
	return s[0].Value.Uint64()
}

// workerGoroutines counts the goroutines of w's pool.
func workerGoroutines(w *workers) int { return int(w.p.alive.Load()) }

// awaitWorkers waits until w's goroutines number want.
func awaitWorkers(t *testing.T, w *workers, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := workerGoroutines(w)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d worker goroutines run, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Jobs run one after another reuse one worker goroutine instead of starting
// one per job, and do waits for the job it runs.
func TestWorkersReuseGoroutines(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorkers(ctx)
	w.do(func() {}) // the first starts a worker
	const n = 1000
	ran := 0
	before := goroutinesCreated(t)
	for range n {
		w.do(func() { ran++ }) // do returns after fn: no race on ran
	}
	created := goroutinesCreated(t) - before
	if ran != n {
		t.Fatalf("ran %d of %d", ran, n)
	}
	if created > n/10 {
		t.Fatalf("%d goroutines created for %d jobs run one after another", created, n)
	}
}

// Jobs running at once run on as many goroutines; afterwards at most
// maxIdleWorkers wait, and they end when the pool's context is done.
func TestWorkersKeepBoundedIdle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorkers(ctx)
	const n = 3 * maxIdleWorkers
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	var callers sync.WaitGroup
	for range n {
		callers.Go(func() {
			w.do(func() {
				started.Done()
				release.Wait()
			})
		})
	}
	started.Wait() // every job runs at once: n workers
	if got := workerGoroutines(w); got != n {
		t.Fatalf("%d worker goroutines for %d jobs running at once", got, n)
	}
	release.Done()
	callers.Wait()
	awaitWorkers(t, w, maxIdleWorkers)
	cancel()
	awaitWorkers(t, w, 0)
}

// A connection's writer runs on the gateway's writer pool: frames queued
// one at a time, each written before the next is queued, start a writer
// each but create almost no goroutines, and when the gateway stops, the
// pool's waiting goroutines end.
func TestWritersReuseGoroutines(t *testing.T) {
	g, cl, c := startOne(t)
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	next := func(i int) {
		t.Helper()
		want := fmt.Sprintf(`{"n":%d}`, i)
		c.enqueue([]byte(want))
		for {
			_, data, err := cl.ReadMessage()
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if string(data) == want {
				return
			}
		}
	}
	next(-1) // the first may start the pool's first goroutine
	const n = 500
	before := goroutinesCreated(t)
	for i := range n {
		next(i)
	}
	if created := goroutinesCreated(t) - before; created > n/10 {
		t.Fatalf("%d goroutines created for %d writes one after another", created, n)
	}
	if got := g.writers.alive.Load(); got < 1 || got > maxIdleWriters {
		t.Fatalf("the writer pool has %d goroutines, want 1 to %d", got, maxIdleWriters)
	}
	g.cancel()
	waitUntil(t, "the writer pool's goroutines to end", func() bool { return g.writers.alive.Load() == 0 })
}

// A connection's sends are answered by its acker on the gateway's acker
// pool: sends made one after another, each acked before the next, start
// an acker each but almost never a goroutine. (The memory backend's feed
// starts goroutines of its own per message, so they are not counted.)
func TestAckersReuseGoroutines(t *testing.T) {
	g, cl, _ := startOneWith(t, Config{FrameRate: 1e6, FrameBurst: 1e6})
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	await := func(typ, ref string) {
		t.Helper()
		for {
			_, data, err := cl.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s %q: %v", typ, ref, err)
			}
			for line := range bytes.SplitSeq(data, []byte("\n")) {
				var f struct{ Type, Ref, Code string }
				if err := json.Unmarshal(line, &f); err != nil {
					t.Fatalf("frame %s: %v", line, err)
				}
				if f.Type == "error" {
					t.Fatalf("error frame %s", line)
				}
				if f.Type == typ && f.Ref == ref {
					return
				}
			}
		}
	}
	send := func(v string) {
		t.Helper()
		if err := cl.WriteMessage(websocket.TextMessage, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"type":"join","room":"r","history":0}`)
	await("joined", "")
	say := func(i int) {
		t.Helper()
		ref := fmt.Sprint("s", i)
		send(`{"type":"send","room":"r","text":"hi","ref":"` + ref + `"}`)
		await("ack", ref)
	}
	say(-1) // the first may start the pools' first goroutines
	const n = 200
	before := g.ackers.spawned.Load()
	for i := range n {
		say(i)
	}
	if spawned := g.ackers.spawned.Load() - before; spawned > n/10 {
		t.Fatalf("the acker pool started %d goroutines for %d sends one after another", spawned, n)
	}
	if got := g.ackers.alive.Load(); got < 1 || got > maxIdleAckers {
		t.Fatalf("the acker pool has %d goroutines, want 1 to %d", got, maxIdleAckers)
	}
}

// boundedRun is what a bounded pool's fn saw: the values in the order
// their calls began, and the most calls running at once.
type boundedRun struct {
	mu         sync.Mutex
	order      []int
	running    int
	maxRunning int
	// gates[v], when set, holds v's call until it is closed.
	gates map[int]chan struct{}
}

func (r *boundedRun) fn(v int) {
	r.mu.Lock()
	r.order = append(r.order, v)
	r.running++
	r.maxRunning = max(r.maxRunning, r.running)
	gate := r.gates[v]
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
}

func (r *boundedRun) began() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

// A bounded pool runs no more calls at once than its bound while none
// stalls, and starts the values past the bound in the order they came.
func TestBoundedPoolKeepsBoundAndOrder(t *testing.T) {
	for _, bound := range []int{1, 3} {
		t.Run(fmt.Sprint("bound=", bound), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gate := make(chan struct{})
			r := &boundedRun{gates: map[int]chan struct{}{}}
			for v := 1; v <= bound; v++ {
				r.gates[v] = gate // the first calls hold every place
			}
			p := bounded(ctx, r.fn, 16, bound, time.Hour)
			const n = 200
			for v := 1; v <= n; v++ {
				p.start(v)
			}
			waitUntil(t, "the first calls to begin", func() bool { return len(r.began()) == bound })
			time.Sleep(50 * time.Millisecond) // time for a call past the bound to begin
			if got := r.began(); len(got) != bound {
				t.Fatalf("%d calls began while %d held the bound of %d", len(got), bound, bound)
			}
			close(gate)
			waitUntil(t, "every call to begin", func() bool { return len(r.began()) == n })
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.maxRunning > bound {
				t.Errorf("%d calls ran at once, bound %d", r.maxRunning, bound)
			}
			if bound == 1 && !slices.IsSorted(r.order) {
				t.Errorf("calls began in the order %v, want the order of start", r.order)
			}
			if got := p.spawned.Load(); got > int64(bound) {
				t.Errorf("%d goroutines started for a bound of %d", got, bound)
			}
		})
	}
}

// A call that blocks lends its place: values waiting behind it run on
// another goroutine once it has run for the stall period, and do not wait
// for it to end.
func TestBoundedPoolLendsPastStalledCall(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck := make(chan struct{})
	defer close(stuck)
	r := &boundedRun{gates: map[int]chan struct{}{1: stuck, 2: stuck}}
	p := bounded(ctx, r.fn, 16, 2, 10*time.Millisecond)
	for v := 1; v <= 10; v++ {
		p.start(v)
	}
	waitUntil(t, "the calls behind two stuck ones to run", func() bool { return len(r.began()) == 10 })
	if p.lent.Load() < 1 {
		t.Errorf("no place was lent, yet calls behind two stuck ones ran")
	}
	// Once nothing waits, the goroutines it lent to go back to waiting:
	// only the two stuck calls run.
	waitUntil(t, "only the stuck calls to run", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.running == 2
	})
	// The stuck calls keep lending their places until they end: a value
	// started now runs at once, not after another stall period (made an
	// hour here, once the checks have stopped for want of waiting values).
	waitUntil(t, "the stall checks to stop", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.watching
	})
	p.mu.Lock()
	p.stall = time.Hour
	p.mu.Unlock()
	p.start(11)
	waitUntil(t, "a value started past two stuck calls to run", func() bool { return len(r.began()) == 11 })
}

// Stopping a bounded pool (its context done) still runs the values that
// wait: each is a connection whose writer must finish it.
func TestBoundedPoolRunsPendingAfterStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	gate := make(chan struct{})
	r := &boundedRun{gates: map[int]chan struct{}{1: gate}}
	p := bounded(ctx, r.fn, 16, 1, time.Hour)
	for v := 1; v <= 5; v++ {
		p.start(v)
	}
	waitUntil(t, "the first call to begin", func() bool { return len(r.began()) == 1 })
	cancel()
	waitUntil(t, "the pool to stop", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stopped
	})
	close(gate)
	waitUntil(t, "the pending calls to run", func() bool { return len(r.began()) == 5 })
	waitUntil(t, "the pool's goroutines to end", func() bool { return p.alive.Load() == 0 })
}

// A fan-out runs its writers on a few goroutines: frames queued to 500
// connections (or four times the bound) at once, round after round, start a writer each, but no
// more goroutines than the bound. (The stall period is made long: a
// writer waiting for a processor looks stalled, and under the race
// detector on two processors they wait for tens of milliseconds.)
func TestFanOutRunsOnFewWriters(t *testing.T) {
	const rounds = 20
	n := max(500, 4*maxRunningWriters())
	g, cls, cs := startManyWith(t, Config{}, n)
	g.writers.mu.Lock()
	g.writers.stall = time.Hour
	g.writers.mu.Unlock()
	var got sync.WaitGroup
	next := make([]chan int, n) // each client's round received
	for i, cl := range cls {
		next[i] = make(chan int, rounds)
		got.Go(func() {
			_ = cl.SetReadDeadline(time.Now().Add(time.Minute))
			for k := 0; k < rounds; {
				_, data, err := cl.ReadMessage()
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				if string(data) == fmt.Sprintf(`{"n":%d}`, k) {
					next[i] <- k
					k++
				}
			}
		})
	}
	before := g.writers.spawned.Load()
	for k := range rounds {
		frame := []byte(fmt.Sprintf(`{"n":%d}`, k))
		for _, c := range cs {
			c.enqueue(frame)
		}
		for i := range n {
			select {
			case <-next[i]:
			case <-time.After(time.Minute):
				t.Fatalf("client %d did not get frame %d", i, k)
			}
		}
	}
	got.Wait()
	spawned := g.writers.spawned.Load() - before
	t.Logf("%d writer goroutines started, %d places lent", spawned, g.writers.lent.Load())
	if limit := int64(maxRunningWriters()); spawned > limit {
		t.Errorf("%d writer goroutines started for %d rounds to %d connections, want at most %d (bound %d)",
			spawned, rounds, n, limit, maxRunningWriters())
	}
}

// Writes that block (peers that stopped reading, sockets full) do not hold
// the writers of other connections, though more of them block than the
// bound on running writers: a connection that reads gets its frame long
// before the pinger would cut the blocked writes.
func TestStalledWritersDoNotHoldOthers(t *testing.T) {
	stalled := maxRunningWriters() + 2
	g, cls, cs := startManyWith(t, Config{
		WriteWait: 10 * time.Minute, PongWait: 10 * time.Minute, PingPeriod: 9 * time.Minute,
		SendQueue: 1024, SendQueueBytes: 64 << 20,
	}, stalled+1)
	frame := []byte(`{"type":"message","text":"` + strings.Repeat("x", 64<<10-64) + `"}`)
	for i, c := range cs[:stalled] {
		// Small buffers on both ends: a few frames fill them.
		client, ok := cls[i].NetConn().(*net.TCPConn)
		server, ok2 := c.ws.NetConn().(*net.TCPConn)
		if !ok || !ok2 {
			t.Fatalf("connections are %T and %T, not TCP", cls[i].NetConn(), c.ws.NetConn())
		}
		if err := client.SetReadBuffer(4 << 10); err != nil {
			t.Fatal(err)
		}
		if err := server.SetWriteBuffer(4 << 10); err != nil {
			t.Fatal(err)
		}
		for range 64 {
			c.enqueue(frame)
		}
	}
	// Each non-reading connection's writer is in a write (stamped with
	// the pinger's clock, which ticks every 54 s here, so only whether it
	// is set tells), twice 100 ms apart.
	blocked := func() bool {
		for _, c := range cs[:stalled] {
			if c.writeSince.Load() == 0 {
				return false
			}
		}
		return true
	}
	waitUntil(t, "every non-reading connection's write to block", blocked)
	time.Sleep(100 * time.Millisecond)
	if !blocked() {
		t.Fatal("a non-reading connection's write ended: the sockets' buffers did not fill")
	}
	reader := cls[stalled]
	cs[stalled].enqueue([]byte(`{"n":1}`))
	_ = reader.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := reader.ReadMessage()
		if err != nil {
			t.Fatalf("the reading connection's frame did not arrive: %v", err)
		}
		if string(data) == `{"n":1}` {
			break
		}
	}
	if g.writers.lent.Load() < 2 {
		t.Errorf("%d places lent, yet %d writes blocked with a bound of %d", g.writers.lent.Load(), stalled, maxRunningWriters())
	}
}

// The FIFO of a bounded pool that never drains (values arrive as fast as
// they are taken) keeps an array the size of what waits, not of what
// passed through it.
func TestBoundedPoolFIFOStaysSmall(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tokens := make(chan struct{})
	var began atomic.Int64
	p := bounded(ctx, func(int) {
		began.Add(1)
		<-tokens
	}, 16, 1, time.Hour)
	const waiting, passed = 10, 300
	for v := 1; v <= waiting+1; v++ {
		p.start(v)
	}
	waitUntil(t, "the first call to begin", func() bool { return began.Load() == 1 })
	for v := waiting + 2; v < waiting+2+passed; v++ {
		want := began.Load() + 1
		tokens <- struct{}{} // a call ends: the next waiting value runs
		waitUntil(t, "the next call to begin", func() bool { return began.Load() == want })
		p.start(v)
	}
	p.mu.Lock()
	size, queued := cap(p.pending), len(p.pending)-p.head
	p.mu.Unlock()
	if queued != waiting {
		t.Fatalf("%d values wait, want %d", queued, waiting)
	}
	if size > 4*waiting {
		t.Errorf("the FIFO's array holds %d values after %d passed through, %d at a time", size, passed, waiting)
	}
	close(tokens)
}

// A goroutine of a bounded pool yields its processor between two values:
// a goroutine woken meanwhile runs after the call that woke it, not once
// the pool's goroutine is preempted (about 10 ms later). One processor,
// calls of 200 µs each.
func TestBoundedPoolYieldsBetweenValues(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	first := make(chan struct{})
	p := bounded(ctx, func(int) {
		if calls.Add(1) == 1 {
			close(first) // wakes the test's goroutine
		}
		for start := time.Now(); time.Since(start) < 200*time.Microsecond; {
		}
	}, 16, 1, time.Hour)
	const n = 500 // 100 ms of calls
	for v := 1; v <= n; v++ {
		p.start(v)
	}
	<-first
	if got := calls.Load(); got > 10 {
		t.Errorf("%d calls ran before the goroutine the first one woke", got)
	}
	waitUntil(t, "every call to run", func() bool { return calls.Load() == n })
}
