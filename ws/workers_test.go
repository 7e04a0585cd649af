package ws

import (
	"bytes"
	"fmt"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
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

// workerGoroutines counts the goroutines running w.run (a traceback names
// the receiver), so other gateways' workers do not count.
func workerGoroutines(t *testing.T, w *workers) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), fmt.Sprintf("ws.(*workers).run(%p", w))
}

// awaitWorkers waits until w's goroutines number want.
func awaitWorkers(t *testing.T, w *workers, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := workerGoroutines(t, w)
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
	done := make(chan struct{})
	defer close(done)
	w := newWorkers(done)
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
// maxIdleWorkers wait, and they end when done is closed.
func TestWorkersKeepBoundedIdle(t *testing.T) {
	done := make(chan struct{})
	w := newWorkers(done)
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
	if got := workerGoroutines(t, w); got != n {
		t.Fatalf("%d worker goroutines for %d jobs running at once", got, n)
	}
	release.Done()
	callers.Wait()
	awaitWorkers(t, w, maxIdleWorkers)
	close(done)
	awaitWorkers(t, w, 0)
}
