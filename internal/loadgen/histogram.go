package loadgen

import (
	"math"
	"math/bits"
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

// histChunks is the number of chunks of 2^histSubBits buckets.
const histChunks = histBuckets >> histSubBits

// histogram counts latencies in log-linear buckets. Every delivery is
// counted (no sampling). Each reader goroutine owns one, so that recording
// is a plain increment with no shared cache line; the run merges them once
// every reader has returned (the sum of the buckets is the distribution of
// every recording). Buckets are allocated a power of two at a time, on
// first use: latencies within a few powers of two take a few KB, however
// many are recorded. It is written by hand rather than taken from
// HdrHistogram-go because the whole of it here is the functions below. Not
// safe for concurrent use.
type histogram struct {
	chunks [histChunks]*[1 << histSubBits]int64
	max    int64
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

// record counts one latency.
func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	b := bucketOf(v)
	c := h.chunks[b>>histSubBits]
	if c == nil {
		c = new([1 << histSubBits]int64)
		h.chunks[b>>histSubBits] = c
	}
	c[b&(1<<histSubBits-1)]++
	h.max = max(h.max, v)
}

// merge adds every latency other recorded to h.
func (h *histogram) merge(other *histogram) {
	for i, oc := range other.chunks {
		if oc == nil {
			continue
		}
		c := h.chunks[i]
		if c == nil {
			c = new([1 << histSubBits]int64)
			h.chunks[i] = c
		}
		for j, n := range oc {
			c[j] += n
		}
	}
	h.max = max(h.max, other.max)
}

// count returns the latencies in bucket i.
func (h *histogram) count(i int) int64 {
	if c := h.chunks[i>>histSubBits]; c != nil {
		return c[i&(1<<histSubBits-1)]
	}
	return 0
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

// summary reads the histogram.
func (h *histogram) summary() Latency {
	var l Latency
	for i := range histBuckets {
		l.Count += h.count(i)
	}
	if l.Count == 0 {
		return l
	}
	l.Max = time.Duration(h.max)
	at := func(p float64) time.Duration {
		rank := int64(math.Ceil(p * float64(l.Count)))
		var seen int64
		for i := range histBuckets {
			seen += h.count(i)
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
