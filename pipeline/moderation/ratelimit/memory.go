package ratelimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// memLimiter keeps one token bucket per key in memory, at most max keys:
// beyond that the least recently used key is forgotten.
type memLimiter struct {
	limit rate.Limit
	burst int
	max   int

	// mu guards m and lru.
	mu  sync.Mutex
	m   map[string]*list.Element // of *memEntry
	lru *list.List               // front: most recently used
}

type memEntry struct {
	key string
	lim *rate.Limiter
}

func newMemLimiter(l Limit, maxKeys int) *memLimiter {
	return &memLimiter{
		limit: rate.Limit(float64(l.Rate) / l.Per.Seconds()),
		burst: l.Burst,
		max:   maxKeys,
		m:     map[string]*list.Element{},
		lru:   list.New(),
	}
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

func (l *memLimiter) get(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.m[key]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*memEntry).lim
	}
	if l.lru.Len() >= l.max {
		oldest := l.lru.Back()
		l.lru.Remove(oldest)
		delete(l.m, oldest.Value.(*memEntry).key)
	}
	e := &memEntry{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
	l.m[key] = l.lru.PushFront(e)
	return e.lim
}
