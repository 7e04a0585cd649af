package overload

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	buckets := []float64{0, 0.001, 0.01, 0.1, math.Inf(1)}
	for _, tc := range []struct {
		counts []uint64
		q      float64
		want   time.Duration
	}{
		{[]uint64{0, 0, 0, 0}, 0.9, 0},
		{[]uint64{10, 0, 0, 0}, 0.9, time.Millisecond},
		{[]uint64{9, 1, 0, 0}, 0.9, time.Millisecond},
		{[]uint64{8, 2, 0, 0}, 0.9, 10 * time.Millisecond},
		{[]uint64{0, 0, 0, 5}, 0.5, 100 * time.Millisecond}, // the open bucket reports its lower bound
		{[]uint64{1, 1, 1, 1}, 1, 100 * time.Millisecond},
	} {
		var total uint64
		for _, n := range tc.counts {
			total += n
		}
		if got := quantile(tc.counts, buckets, total, tc.q); got != tc.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", tc.counts, tc.q, got, tc.want)
		}
	}
}

// TestShareFollowsLatency: the share rises by a step per interval over the
// target up to the cap, holds between half the target and the target, and
// falls by half a step per interval below half of it.
func TestShareFollowsLatency(t *testing.T) {
	d, err := New(Config{Target: 10 * time.Millisecond, Step: 0.25, MaxShare: 0.6})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		lat  time.Duration
		want float64
	}{
		{20 * time.Millisecond, 0.25},
		{20 * time.Millisecond, 0.5},
		{20 * time.Millisecond, 0.6},
		{7 * time.Millisecond, 0.6},
		{time.Millisecond, 0.475},
		{time.Millisecond, 0.35},
		{time.Millisecond, 0.225},
		{time.Millisecond, 0.1},
		{time.Millisecond, 0},
		{time.Millisecond, 0},
	}
	for i, s := range steps {
		d.update(s.lat)
		if got := d.Share(); math.Abs(got-s.want) > 1e-9 {
			t.Fatalf("step %d (%v): share %v, want %v", i, s.lat, got, s.want)
		}
	}
	if d.Shed() {
		t.Fatal("shed at share 0")
	}
	d.share.Store(math.Float64bits(1))
	if !d.Shed() || d.Shedded() != 1 {
		t.Fatalf("share 1 did not shed (shedded %d)", d.Shedded())
	}
	var none *Detector
	if none.Shed() || none.Share() != 0 || none.Latency() != 0 {
		t.Fatal("a nil detector sheds")
	}
}

// TestDetectsRealScheduling: with far more runnable goroutines than CPUs,
// the runtime's own scheduling latency rises over a small target and the
// detector starts shedding. (How the share falls again is
// TestShareFollowsLatency's: on a shared machine the latency need not fall
// below half so small a target.)
func TestDetectsRealScheduling(t *testing.T) {
	d, err := New(Config{Target: 200 * time.Microsecond, Interval: 20 * time.Millisecond, Step: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 64 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for !stop.Load() {
				spin(20 * time.Microsecond)
				runtime.Gosched()
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.Share() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if d.Share() == 0 {
		t.Fatalf("never shed under load; last latency %v", d.Latency())
	}
}

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Target: -1}, {Interval: -1}, {Quantile: 1.5}, {Step: 2}, {MaxShare: -0.1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
