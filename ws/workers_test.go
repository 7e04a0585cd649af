package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime/metrics"
	"sync"
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
