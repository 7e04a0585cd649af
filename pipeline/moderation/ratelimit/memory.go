package ratelimit

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// memLimiter keeps one token bucket per key in memory, at most maxKeys of
// them: beyond that the least recently used key is forgotten, and starts
// afresh with a full burst when it comes back.
type memLimiter struct {
	limit rate.Limit
	burst int

	// mu guards buckets: one lock makes the lookup-or-create of a bucket
	// one step. The buckets themselves are safe for concurrent use.
	mu      sync.Mutex
	buckets *simplelru.LRU[string, *rate.Limiter]
}

// newMemLimiter returns a limiter of l over at most maxKeys keys; maxKeys
// must be positive.
func newMemLimiter(l Limit, maxKeys int) (*memLimiter, error) {
	buckets, err := simplelru.NewLRU[string, *rate.Limiter](maxKeys, nil)
	if err != nil {
		return nil, fmt.Errorf("max_keys %d: %w", maxKeys, err)
	}
	return &memLimiter{
		limit:   rate.Limit(float64(l.Rate) / l.Per.Seconds()),
		burst:   l.Burst,
		buckets: buckets,
	}, nil
}

// reservation is one token taken at a time, or the wait before one is free.
type reservation struct {
	r    *rate.Reservation
	wait time.Duration
}

// cancel gives the token back (a no-op for an empty reservation).
func (r reservation) cancel(t time.Time) {
	if r.r != nil && r.wait == 0 {
		r.r.CancelAt(t)
	}
}

// reserve takes a token of key at time t, or returns how long to wait.
func (l *memLimiter) reserve(key string, t time.Time) reservation {
	if t.IsZero() {
		t = time.Now()
	}
	lim := l.get(key)
	r := lim.ReserveN(t, 1)
	if !r.OK() {
		return reservation{wait: time.Hour} // burst 0: never
	}
	if d := r.DelayFrom(t); d > 0 {
		r.CancelAt(t)
		return reservation{wait: d}
	}
	return reservation{r: r}
}

// get returns the bucket of key, creating it (and evicting the least
// recently used key when maxKeys are kept).
func (l *memLimiter) get(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.buckets.Get(key); ok { // Get marks key the most recently used
		return lim
	}
	lim := rate.NewLimiter(l.limit, l.burst)
	l.buckets.Add(key, lim)
	return lim
}
