package pipeline_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// countingSink is a Deliverer that only counts, and counts the outcomes
// Submit returned, so the benchmarks measure the pipeline and not a
// recorder.
type countingSink struct {
	acks, refused, delivered atomic.Int64
	// refs numbers the submissions' refs: a ref used twice would be a
	// retry, acked with the first message and not delivered again.
	refs atomic.Int64
	// retries counts the sends refused as overloaded and sent again.
	retries atomic.Int64
}

// outcome counts o.
func (c *countingSink) outcome(o pipeline.Outcome) {
	if o.Err != nil {
		c.refused.Add(1)
		return
	}
	c.acks.Add(1)
}

func (c *countingSink) Deliver(pipeline.Message) { c.delivered.Add(1) }

func (c *countingSink) Resync(func(room string) bool) int { return 0 }

// submit submits s, with a ref of its own, to p and counts its outcome; it
// fails b when Submit errs or returns another submission's outcome. A send
// refused because the backend's queue is full is sent again with the same
// ref after a millisecond, as a client would after its retry hint, and
// counted in retries.
func (c *countingSink) submit(b *testing.B, p *pipeline.Pipeline, s pipeline.Submission) bool {
	s.Ref = "r" + strconv.FormatInt(c.refs.Add(1), 10)
	for {
		o, err := p.Submit(context.Background(), s)
		if err != nil {
			b.Error(err)
			return false
		}
		if o.Ref != s.Ref || o.Room != s.Room {
			b.Errorf("outcome ref %q room %q, want %q and %q", o.Ref, o.Room, s.Ref, s.Room)
			return false
		}
		if o.Err != nil && o.Err.Code == pipeline.CodeUnavailable && o.Err.RetryAfter > 0 {
			c.retries.Add(1)
			time.Sleep(time.Millisecond)
			continue
		}
		c.outcome(o)
		return true
	}
}

// check fails b unless exactly n submissions were acknowledged and
// delivered since the last reset.
func (c *countingSink) check(b *testing.B, n int64) {
	b.Helper()
	deadline := time.Now().Add(wait)
	for c.delivered.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if acks, refused, delivered := c.acks.Load(), c.refused.Load(), c.delivered.Load(); acks != n || refused != 0 || delivered != n {
		b.Fatalf("%d submissions: %d acks, %d refused, %d delivered", n, acks, refused, delivered)
	}
}

func (c *countingSink) reset() {
	c.acks.Store(0)
	c.refused.Store(0)
	c.delivered.Store(0)
	c.retries.Store(0)
}

// benchSubmission is a typical send of conn n to its own room.
func benchSubmission(n int) pipeline.Submission {
	return pipeline.Submission{
		ConnID: fmt.Sprint("conn-", n), User: "alice", Room: fmt.Sprint("room-", n),
		Text: "hello, world — a message of typical length", Ref: "r",
	}
}

// startSubmitBench runs a pipeline reporting to a new counting sink and
// fills the rooms of conns 1..rooms to the backend's cap, so the benchmark
// measures the steady state of a busy room rather than an empty one.
func startSubmitBench(b *testing.B, rooms int) (*pipeline.Pipeline, *countingSink) {
	b.Helper()
	sink := &countingSink{}
	f := newFixture(b, roomMaxLen)
	// The backend itself is the store: the fixture's recording store would
	// be measured too.
	f.start(b, pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: f.be},
		Delivery: pipeline.DeliveryConfig{Deliverer: sink},
	})
	f.waitRunning(b)
	p := f.p
	for n := 1; n <= rooms; n++ {
		s := benchSubmission(n)
		for range roomMaxLen {
			if !sink.submit(b, p, s) {
				b.FailNow()
			}
		}
	}
	sink.check(b, int64(rooms*roomMaxLen))
	sink.reset()
	return p, sink
}

// BenchmarkSubmit measures one submission through the whole pipeline —
// middleware chain, memory store at its per-room cap, and delivery — from
// one goroutine to one room ("serial") and from GOMAXPROCS goroutines with
// a room each ("parallel"). Every submission must return its own
// acknowledgement and be delivered; one refused because delivery is behind
// (the backend's queue is full) is retried and counted in retries/msg.
func BenchmarkSubmit(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		p, sink := startSubmitBench(b, 1)
		s := benchSubmission(1)
		b.ReportAllocs()
		for b.Loop() {
			if !sink.submit(b, p, s) {
				b.FailNow()
			}
		}
		sink.check(b, int64(b.N))
		b.ReportMetric(float64(sink.retries.Load())/float64(b.N), "retries/msg")
	})
	b.Run("parallel", func(b *testing.B) {
		p, sink := startSubmitBench(b, runtime.GOMAXPROCS(0))
		var conns atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			s := benchSubmission(int(conns.Add(1)))
			for pb.Next() {
				if !sink.submit(b, p, s) {
					return
				}
			}
		})
		b.StopTimer()
		sink.check(b, int64(b.N))
		b.ReportMetric(float64(sink.retries.Load())/float64(b.N), "retries/msg")
	})
}
