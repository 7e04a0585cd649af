package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets of a histogram: exact below 2^(histSubBits+1) ns, then
// 2^histSubBits buckets per power of two, so a reported percentile is within
// 1/2^(histSubBits+1) (0.4%) of the true one. histBuckets covers every
// non-negative int64.
const (
	histSubBits = 7
	histBuckets = (64 - histSubBits) << histSubBits
)

// histogram counts latencies in log-linear buckets. Every delivery is
// counted (no sampling) in fixed memory (about 58 KB), and record is a
// lock-free atomic add, so a thousand reader goroutines share one without
// a lock. It is written by hand rather than taken from HdrHistogram-go
// because that one needs a lock (or a histogram per goroutine and a merge)
// and the whole of it here is the two functions below.
type histogram struct {
	counts [histBuckets]atomic.Int64
	max    atomic.Int64
}

// bucketOf returns the bucket of v nanoseconds (negative counts as 0).
func bucketOf(v int64) int {
	u := uint64(max(v, 0))
	if u < 1<<(histSubBits+1) {
		return int(u)
	}
	shift := bits.Len64(u) - (histSubBits + 1)
	return shift<<histSubBits + int(u>>shift)
}

// bucketRange returns the lowest value of bucket i and the bucket's width.
func bucketRange(i int) (low, width int64) {
	if i < 1<<(histSubBits+1) {
		return int64(i), 1
	}
	shift := i>>histSubBits - 1
	return int64(i-shift<<histSubBits) << shift, 1 << shift
}

// record counts one latency. Safe for concurrent use.
func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Latency summarises a latency distribution. Percentiles are the midpoint
// of their bucket (within 0.4%), never above Max.
type Latency struct {
	// Count is the number of latencies recorded.
	Count int64 `json:"count"`
	// P50, P90 and P99 are percentiles; Max is exact.
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// summary reads the histogram. Call it once recording has stopped.
func (h *histogram) summary() Latency {
	var counts [histBuckets]int64
	var l Latency
	for i := range counts {
		counts[i] = h.counts[i].Load()
		l.Count += counts[i]
	}
	if l.Count == 0 {
		return l
	}
	l.Max = time.Duration(h.max.Load())
	at := func(p float64) time.Duration {
		rank := int64(math.Ceil(p * float64(l.Count)))
		var seen int64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				low, width := bucketRange(i)
				return min(time.Duration(low+width/2), l.Max)
			}
		}
		return l.Max
	}
	l.P50, l.P90, l.P99 = at(0.50), at(0.90), at(0.99)
	return l
}
