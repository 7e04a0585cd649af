package loadgen

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestBuckets: every value falls in the bucket whose range holds it, and
// buckets are narrower than 1/128 of their values.
func TestBuckets(t *testing.T) {
	values := []int64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 123_456_789, 1<<62 + 12345, 1<<63 - 1}
	for range 1000 {
		values = append(values, rand.Int64N(1<<40))
	}
	for _, v := range values {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside 0..%d", v, i, histBuckets-1)
		}
		low, width := bucketRange(i)
		if v < low || v-low >= width {
			t.Errorf("bucketOf(%d) = %d, whose range is [%d, %d)", v, i, low, low+width)
		}
		if width > 1 && width > low/128 {
			t.Errorf("bucket %d: width %d too wide for %d", i, width, low)
		}
	}
}

// TestHistogramSummary: percentiles of 1..10000 µs are within 0.5%.
func TestHistogramSummary(t *testing.T) {
	var h histogram
	for _, i := range rand.Perm(10_000) {
		h.record(time.Duration(i+1) * time.Microsecond)
	}
	h.record(-time.Second) // a clock step counts as 0
	l := h.summary()
	if l.Count != 10_001 || l.Max != 10*time.Millisecond {
		t.Errorf("count %d max %v, want 10001 and 10ms", l.Count, l.Max)
	}
	for _, c := range []struct {
		got, want time.Duration
	}{{l.P50, 5 * time.Millisecond}, {l.P90, 9 * time.Millisecond}, {l.P99, 9900 * time.Microsecond}} {
		if d := c.got - c.want; d < -c.want/200 || d > c.want/200 {
			t.Errorf("percentile %v, want %v ± 0.5%%", c.got, c.want)
		}
	}
	if (&histogram{}).summary() != (Latency{}) {
		t.Error("an empty histogram has a non-zero summary")
	}
}

// TestHistogramMerge: histograms recorded apart and merged summarise like
// one that recorded everything, and merging an empty one changes nothing.
func TestHistogramMerge(t *testing.T) {
	var all, merged histogram
	parts := make([]histogram, 7)
	for i := range 50_000 {
		d := time.Duration(rand.Int64N(int64(2 * time.Second)))
		if i%1000 == 0 {
			d = time.Duration(i) * time.Hour // a few far outliers, in chunks of their own
		}
		all.record(d)
		parts[i%len(parts)].record(d)
	}
	for i := range parts {
		merged.merge(&parts[i])
	}
	merged.merge(&histogram{})
	if got, want := merged.summary(), all.summary(); got != want || got.Count != 50_000 {
		t.Errorf("merged %+v\nwant   %+v (count 50000)", got, want)
	}
	for i := range histBuckets {
		if merged.count(i) != all.count(i) {
			t.Fatalf("bucket %d: merged %d, want %d", i, merged.count(i), all.count(i))
		}
	}
}
