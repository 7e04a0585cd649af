package admin

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"

	"github.com/chatstream/chatstream/admission"
)

// Limits on failed requests (a missing or wrong token).
const (
	// MinTokenBytes is the shortest admin token accepted, after trimming.
	MinTokenBytes = 16
	// FailureBurst is the number of failed requests one client address
	// may make at once; after it, FailureEvery refills one.
	FailureBurst = 5
	// FailureEvery is how often a throttled address may fail again.
	// While it may not, every request of the address, a right one too,
	// is answered 429 with Retry-After.
	FailureEvery = 10 * time.Second
	// MaxFailureAddrs bounds the addresses tracked; the one that failed
	// longest ago is forgotten first.
	MaxFailureAddrs = 10000
	// failureLogEvery samples the failure log: at most one line per
	// interval, counting the failures it did not log.
	failureLogEvery = 10 * time.Second
)

// failureGuard counts and throttles failed requests per client address, as
// Config.ClientAddr names it (an IPv6 network is one address).
type failureGuard struct {
	log      *slog.Logger
	failures atomic.Int64
	// logLimit samples the log; unlogged counts the failures since the
	// last line.
	logLimit *rate.Limiter
	unlogged atomic.Int64

	// mu guards limiters.
	mu       sync.Mutex
	limiters *simplelru.LRU[netip.Addr, *rate.Limiter]
}

func newFailureGuard(log *slog.Logger) *failureGuard {
	lru, _ := simplelru.NewLRU[netip.Addr, *rate.Limiter](MaxFailureAddrs, nil) // the size is positive
	return &failureGuard{log: log, logLimit: rate.NewLimiter(rate.Every(failureLogEvery), 1), limiters: lru}
}

// peerAddr is the request's TCP peer address, IPv6 grouped per
// /admission.DefaultIPv6PrefixLen as the WebSocket limits group it by
// default: Config.ClientAddr's default. A proxy in front then counts as
// one client.
func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host) // the zero Addr groups unparsable peers
	return admission.GroupAddr(a, admission.DefaultIPv6PrefixLen)
}

// throttled returns how long addr must wait before its next request, or 0.
func (g *failureGuard) throttled(addr netip.Addr, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	lim, ok := g.limiters.Peek(addr)
	if !ok {
		return 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) * float64(FailureEvery))
}

// failed counts a failed request of addr, takes one of its failures, and
// logs it, sampled.
func (g *failureGuard) failed(addr netip.Addr, r *http.Request, now time.Time) {
	g.failures.Add(1)
	g.mu.Lock()
	lim, ok := g.limiters.Get(addr)
	if !ok {
		lim = rate.NewLimiter(rate.Every(FailureEvery), FailureBurst)
		g.limiters.Add(addr, lim)
	}
	lim.AllowN(now, 1)
	g.mu.Unlock()
	if !g.logLimit.AllowN(now, 1) {
		g.unlogged.Add(1)
		return
	}
	g.log.Warn("admin API: request with a missing or wrong token (sampled)",
		"client", addr.String(), "method", r.Method, "path", r.URL.Path,
		"failures_total", g.failures.Load(), "unlogged_since_last", g.unlogged.Swap(0))
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
