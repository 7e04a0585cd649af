// Package overload tells when the process has more work than CPU, from the
// Go scheduler's own latency (how long runnable goroutines wait for a CPU),
// and sheds a share of new work while it lasts.
//
// An instance that takes more sends than its CPU can handle does not fail
// at once: its goroutines wait longer and longer to run, frames wait
// unread in the sockets, and the round trips to the backend are noticed
// late, so it stores less and less while working harder. Queues inside the
// process cannot show this (the backlog sits in the kernel's socket
// buffers), but the scheduler's latency does. A Detector samples it and
// raises the share of new sends to refuse while the latency stays above
// its target, and lowers it again once the latency falls.
package overload

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	// DefaultTarget is the scheduling latency (at Quantile) above which
	// new work is shed.
	DefaultTarget = 50 * time.Millisecond
	// DefaultInterval is how often the latency is sampled.
	DefaultInterval = 100 * time.Millisecond
	// DefaultQuantile is the quantile of the interval's scheduling
	// latencies compared with the target.
	DefaultQuantile = 0.9
	// DefaultStep is how much the share of shed work rises per interval
	// over the target; it falls by half as much per interval below half
	// the target.
	DefaultStep = 0.1
	// DefaultMaxShare is the largest share of work shed: some always
	// passes, so the latency it meets keeps being measured by real work.
	DefaultMaxShare = 0.95
)

// Config configures a Detector. A zero field takes the default given in its
// comment.
type Config struct {
	// Target is the scheduling latency above which work is shed.
	// Default DefaultTarget.
	Target time.Duration
	// Interval is how often the latency is sampled. Default
	// DefaultInterval.
	Interval time.Duration
	// Quantile is the quantile of an interval's latencies compared with
	// Target, in (0, 1]. Default DefaultQuantile.
	Quantile float64
	// Step is how much the shed share rises per interval over Target.
	// Default DefaultStep.
	Step float64
	// MaxShare caps the shed share, in (0, 1]. Default DefaultMaxShare.
	MaxShare float64
}

func (c *Config) setDefaults() {
	if c.Target == 0 {
		c.Target = DefaultTarget
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Quantile == 0 {
		c.Quantile = DefaultQuantile
	}
	if c.Step == 0 {
		c.Step = DefaultStep
	}
	if c.MaxShare == 0 {
		c.MaxShare = DefaultMaxShare
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Target <= 0, c.Interval <= 0:
		return errors.New("overload: target and interval must be positive")
	case c.Quantile <= 0 || c.Quantile > 1:
		return errors.New("overload: quantile must be in (0, 1]")
	case c.Step <= 0 || c.Step > 1, c.MaxShare <= 0 || c.MaxShare > 1:
		return errors.New("overload: step and max share must be in (0, 1]")
	}
	return nil
}

// schedLatencies is the runtime metric sampled: how long goroutines were
// runnable before they ran.
const schedLatencies = "/sched/latencies:seconds"

// Detector samples the scheduler's latency and keeps the share of new work
// to shed. Create it with New and run it with Run; Shed and Share are safe
// for concurrent use. A nil *Detector never sheds.
type Detector struct {
	cfg    Config
	sample []metrics.Sample
	prev   []uint64
	// share is the shed share as math.Float64bits; latency the last
	// interval's quantile in nanoseconds.
	share   atomic.Uint64
	latency atomic.Int64
	shed    atomic.Int64
}

// New returns a detector for cfg.
func New(cfg Config) (*Detector, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, sample: []metrics.Sample{{Name: schedLatencies}}}
	metrics.Read(d.sample)
	if d.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil, errors.New("overload: this Go runtime does not report scheduling latencies")
	}
	d.prev = append([]uint64(nil), d.sample[0].Value.Float64Histogram().Counts...)
	return d, nil
}

// Run samples the latency every interval until ctx is done.
func (d *Detector) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.update(d.read())
		}
	}
}

// read returns the quantile of the scheduling latencies since the last read.
func (d *Detector) read() time.Duration {
	metrics.Read(d.sample)
	h := d.sample[0].Value.Float64Histogram()
	delta := make([]uint64, len(h.Counts))
	var total uint64
	for i, n := range h.Counts {
		delta[i] = n - d.prev[i]
		total += delta[i]
	}
	copy(d.prev, h.Counts)
	return quantile(delta, h.Buckets, total, d.cfg.Quantile)
}

// quantile returns the q quantile of a histogram of total samples, as the
// upper bound of the bucket it falls in (buckets[i+1] bounds counts[i]);
// zero without samples.
func quantile(counts []uint64, buckets []float64, total uint64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen >= rank {
			upper := buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = buckets[i]
			}
			return time.Duration(upper * float64(time.Second))
		}
	}
	return 0
}

// update moves the shed share after an interval whose latency was lat:
// up by Step over the target, down by Step/2 below half of it.
func (d *Detector) update(lat time.Duration) {
	d.latency.Store(int64(lat))
	share := d.Share()
	switch {
	case lat > d.cfg.Target:
		share = min(d.cfg.MaxShare, share+d.cfg.Step)
	case lat < d.cfg.Target/2:
		share = max(0, share-d.cfg.Step/2)
	}
	d.share.Store(math.Float64bits(share))
}

// Shed reports whether to refuse one piece of new work now: with the
// current shed share's probability.
func (d *Detector) Shed() bool {
	if d == nil {
		return false
	}
	share := d.Share()
	if share == 0 || rand.Float64() >= share {
		return false
	}
	d.shed.Add(1)
	return true
}

// Share returns the share of new work shed now, from 0 to MaxShare.
func (d *Detector) Share() float64 {
	if d == nil {
		return 0
	}
	return math.Float64frombits(d.share.Load())
}

// Latency returns the scheduling latency of the last interval at the
// configured quantile.
func (d *Detector) Latency() time.Duration {
	if d == nil {
		return 0
	}
	return time.Duration(d.latency.Load())
}

// Shedded returns how many pieces of work Shed has refused.
func (d *Detector) Shedded() int64 {
	if d == nil {
		return 0
	}
	return d.shed.Load()
}
