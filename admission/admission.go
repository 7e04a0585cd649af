// Package admission decides which WebSocket upgrade requests become
// connections: at most MaxConns at once on the instance, at most
// MaxConnsPerIP from one client address, and at most HandshakeRate
// handshakes per second (HandshakeBurst at once) from one client address.
// A refused request is answered 429 (its address is over a limit) or 503
// (the instance is full or shutting down) with Retry-After and a short
// plain-text reason, counted by reason (Stats), and logged in aggregate.
//
// The client address is the TCP peer's, or, when the peer is a trusted
// proxy, the one it reports in X-Forwarded-For (ClientAddr).
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// Config configures an Admission. A zero field takes the default in its
// comment.
type Config struct {
	// MaxConns is the number of connections the instance holds at once.
	// Default DerivedMaxConns(): the process's open-file limit minus
	// headroom for everything else (health checks, Redis, files).
	MaxConns int
	// MaxConnsPerIP is the number of connections one client address holds
	// at once. Default DefaultMaxConnsPerIP.
	MaxConnsPerIP int
	// HandshakeRate is the sustained number of upgrade requests per second
	// one client address may make; every request takes a token, whether
	// it is then admitted or not. Default DefaultHandshakeRate.
	HandshakeRate float64
	// HandshakeBurst is the number of upgrade requests one client address
	// may make at once. Default DefaultHandshakeBurst.
	HandshakeBurst int
	// MaxAddrs is the number of client addresses whose handshake rate is
	// tracked. When it is full, the address seen least recently is
	// forgotten and starts again with a full burst. Default
	// DefaultMaxAddrs.
	MaxAddrs int
	// TrustedProxies lists the proxies (CIDRs such as 10.0.0.0/8, or
	// single addresses) whose X-Forwarded-For is believed. Default none:
	// the header is ignored and the TCP peer is the client.
	TrustedProxies []string
	// IPv6PrefixLen groups IPv6 clients: the addresses of one /N network
	// count as one client address, since one host is usually given a whole
	// /64. 128 counts each address. Default DefaultIPv6PrefixLen.
	IPv6PrefixLen int
	// RetryAfter is the Retry-After of a refusal for a full instance, a
	// full address or a shutdown; a handshake-rate refusal gets the time
	// until the address's next token instead. Default DefaultRetryAfter.
	RetryAfter time.Duration
	// LogEvery is the interval of the aggregated refusal log line: at most
	// one line per interval, with the counts by reason since the last one.
	// Default DefaultLogEvery.
	LogEvery time.Duration
	// Logger logs the limits and the aggregated refusals. Default
	// slog.Default().
	Logger *slog.Logger
}

// Defaults of Config, also used by the command line's flags.
const (
	DefaultMaxConnsPerIP = 100
	DefaultHandshakeRate = 10
	// DefaultHandshakeBurst equals DefaultMaxConnsPerIP, so one address (a
	// NAT reconnecting its users after a restart) may open its whole
	// allowance at once.
	DefaultHandshakeBurst = 100
	// DefaultMaxAddrs bounds the tracked handshake limiters to a few MB
	// (each is about 200 bytes with its LRU entry).
	DefaultMaxAddrs      = 1 << 16
	DefaultIPv6PrefixLen = 64
	DefaultRetryAfter    = 5 * time.Second
	DefaultLogEvery      = 10 * time.Second
)

func (c *Config) setDefaults() {
	if c.MaxConns == 0 {
		c.MaxConns = DerivedMaxConns()
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.HandshakeRate == 0 {
		c.HandshakeRate = DefaultHandshakeRate
	}
	if c.HandshakeBurst == 0 {
		c.HandshakeBurst = DefaultHandshakeBurst
	}
	if c.MaxAddrs == 0 {
		c.MaxAddrs = DefaultMaxAddrs
	}
	if c.IPv6PrefixLen == 0 {
		c.IPv6PrefixLen = DefaultIPv6PrefixLen
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.LogEvery == 0 {
		c.LogEvery = DefaultLogEvery
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in.
func (c Config) Validate() error {
	if c.MaxConns <= 0 || c.MaxConnsPerIP <= 0 || c.HandshakeBurst <= 0 || c.MaxAddrs <= 0 {
		return errors.New("admission: limits must be positive")
	}
	if !(c.HandshakeRate > 0) || math.IsInf(c.HandshakeRate, 0) {
		return fmt.Errorf("admission: handshake rate %v must be a positive number", c.HandshakeRate)
	}
	if c.IPv6PrefixLen < 1 || c.IPv6PrefixLen > 128 {
		return fmt.Errorf("admission: IPv6 prefix length %d is not between 1 and 128", c.IPv6PrefixLen)
	}
	if c.RetryAfter <= 0 || c.LogEvery <= 0 {
		return errors.New("admission: durations must be positive")
	}
	_, err := parseTrusted(c.TrustedProxies)
	return err
}

// Reason is why an upgrade request was refused. Its String is a stable
// label, for logs and metrics.
type Reason int

// Reasons of refusal.
const (
	// ReasonMaxConns: the instance holds MaxConns connections (503).
	ReasonMaxConns Reason = iota
	// ReasonMaxConnsPerIP: the client address holds MaxConnsPerIP
	// connections (429).
	ReasonMaxConnsPerIP
	// ReasonHandshakeRate: the client address made more than its
	// handshakes per second (429).
	ReasonHandshakeRate
	// ReasonShuttingDown: the instance is shutting down (503).
	ReasonShuttingDown

	numReasons
)

// Reasons returns every Reason, in order.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

var reasonText = [numReasons]struct{ label, body string }{
	ReasonMaxConns:      {"max_conns", "server is at its connection limit, retry later"},
	ReasonMaxConnsPerIP: {"max_conns_per_ip", "too many connections from your address"},
	ReasonHandshakeRate: {"handshake_rate", "too many connection attempts from your address, slow down"},
	ReasonShuttingDown:  {"shutting_down", "server is shutting down"},
}

func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return "reason(" + strconv.Itoa(int(r)) + ")"
	}
	return reasonText[r].label
}

// Status returns the HTTP status of a refusal for r: 429 when the client
// address is over its limits, 503 when the instance cannot take anyone.
func (r Reason) Status() int {
	if r == ReasonMaxConnsPerIP || r == ReasonHandshakeRate {
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// Stats is a snapshot of an Admission's counters.
type Stats struct {
	// Open is the number of admitted requests whose handler has not
	// returned: the open WebSocket connections.
	Open int
	// Addrs is the number of client addresses with an open connection.
	Addrs int
	// Tracked is the number of client addresses whose handshake rate is
	// tracked; at most MaxAddrs.
	Tracked int
	// Admitted counts the requests admitted since New.
	Admitted uint64
	// Refused counts the requests refused since New, by reason; every
	// Reason has an entry.
	Refused map[Reason]uint64
}

// Admission admits or refuses upgrade requests (Wrap). It is safe for
// concurrent use.
type Admission struct {
	cfg     Config
	trusted []netip.Prefix
	log     *refusalLog

	// mu guards the fields below; it is held for a few map operations per
	// request, never while a handler runs.
	mu     sync.Mutex
	closed bool
	open   int
	// perAddr counts the open connections of each client address. An entry
	// exists only while its count is positive, so the map never holds more
	// than MaxConns entries.
	perAddr map[netip.Addr]int
	// limiters holds the handshake limiter of each client address seen
	// recently, at most MaxAddrs of them; when it is full the least
	// recently used one is dropped (that address starts again with a full
	// burst).
	limiters *simplelru.LRU[netip.Addr, *rate.Limiter]
	admitted uint64
	refused  [numReasons]uint64
}

// New returns an Admission with cfg's limits.
func New(cfg Config) (*Admission, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	trusted, err := parseTrusted(cfg.TrustedProxies)
	if err != nil {
		return nil, err // Validate has checked them
	}
	lru, err := simplelru.NewLRU[netip.Addr, *rate.Limiter](cfg.MaxAddrs, nil)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	a := &Admission{
		cfg: cfg, trusted: trusted, log: newRefusalLog(cfg.Logger, cfg.LogEvery),
		perAddr: make(map[netip.Addr]int), limiters: lru,
	}
	cfg.Logger.Info("admission limits", "max_conns", cfg.MaxConns, "max_conns_per_ip", cfg.MaxConnsPerIP,
		"handshake_rate", cfg.HandshakeRate, "handshake_burst", cfg.HandshakeBurst, "trusted_proxies", len(trusted))
	return a, nil
}

// Wrap returns next behind the admission limits. A request counts against
// the limits from its admission until next returns, or, when next hands
// the connection to another goroutine, until the function Hold returned
// is called.
func (a *Admission) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := a.ClientKey(r)
		reason, retry, ok := a.admit(addr, time.Now())
		if !ok {
			a.log.add(reason, addr)
			refuse(w, reason, retry)
			return
		}
		s := &slot{release: func() { a.release(addr) }}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotKey{}, s)))
		if !s.held {
			a.release(addr)
		}
	})
}

// slot is a request's connection slot, in its context.
type slot struct {
	release func()
	// held is set, by the handler's goroutine, when the handler keeps
	// the slot past its return.
	held bool
}

type slotKey struct{}

// Hold keeps r's connection slot after the handler returns, for a handler
// that hands its connection (hijacked) to another goroutine. It must be
// called by the handler's goroutine, at most once; the function it returns
// gives the slot back (later calls do nothing). For a request that Wrap
// did not admit it returns a function that does nothing.
func Hold(r *http.Request) func() {
	s, ok := r.Context().Value(slotKey{}).(*slot)
	if !ok || s.held {
		return func() {}
	}
	s.held = true
	return sync.OnceFunc(s.release)
}

// admit takes a handshake token and a connection slot for addr, or
// returns why not and when to retry. Every request takes a token, so a
// client retrying against a full instance is slowed down too.
func (a *Admission) admit(addr netip.Addr, now time.Time) (Reason, time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	wait, allowed := a.takeHandshake(addr, now)
	reason, retry := ReasonShuttingDown, a.cfg.RetryAfter
	switch {
	case a.closed:
	case !allowed:
		reason, retry = ReasonHandshakeRate, wait
	case a.perAddr[addr] >= a.cfg.MaxConnsPerIP:
		reason = ReasonMaxConnsPerIP
	case a.open >= a.cfg.MaxConns:
		reason = ReasonMaxConns
	default:
		a.open++
		a.perAddr[addr]++
		a.admitted++
		return 0, 0, true
	}
	a.refused[reason]++
	return reason, retry, false
}

// takeHandshake takes one of addr's handshake tokens, or returns how long
// until the next one. a.mu must be held.
func (a *Admission) takeHandshake(addr netip.Addr, now time.Time) (time.Duration, bool) {
	lim, ok := a.limiters.Get(addr)
	if !ok {
		lim = rate.NewLimiter(rate.Limit(a.cfg.HandshakeRate), a.cfg.HandshakeBurst)
		a.limiters.Add(addr, lim) // evicts the least recently used when full
	}
	if lim.AllowN(now, 1) {
		return 0, true
	}
	missing := 1 - lim.TokensAt(now)
	return time.Duration(missing / a.cfg.HandshakeRate * float64(time.Second)), false
}

// release gives back the connection slot of addr.
func (a *Admission) release(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open--
	if n := a.perAddr[addr] - 1; n > 0 {
		a.perAddr[addr] = n
	} else {
		delete(a.perAddr, addr)
	}
}

// refuse answers a refused request. The connection is closed after the
// answer, so refused clients cannot keep idle descriptors open.
func refuse(w http.ResponseWriter, reason Reason, retry time.Duration) {
	secs := max(1, int(math.Ceil(retry.Seconds())))
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("Connection", "close")
	http.Error(w, reasonText[reason].body, reason.Status())
}

// Close refuses every later request with 503 (the instance is shutting
// down) and writes the pending refusal counts to the log. Connections
// already admitted are not affected.
func (a *Admission) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.log.flush()
}

// Stats returns the current counters.
func (a *Admission) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Stats{
		Open: a.open, Addrs: len(a.perAddr), Tracked: a.limiters.Len(), Admitted: a.admitted,
		Refused: make(map[Reason]uint64, numReasons),
	}
	for r, n := range a.refused {
		s.Refused[Reason(r)] = n
	}
	return s
}

// ClientKey returns the address r's client is counted under by every
// per-address limit: its ClientAddr grouped by GroupAddr with the
// configured IPv6PrefixLen. An IPv4 client is its own address; an IPv6
// client is its /IPv6PrefixLen network, given as the network's first
// address (2001:db8:1:2:: for any address of 2001:db8:1:2::/64). Other
// per-client limits, such as the admin API's throttle of wrong tokens,
// use it to count clients the way the WebSocket limits do.
func (a *Admission) ClientKey(r *http.Request) netip.Addr {
	return a.key(a.ClientAddr(r))
}

// key returns the address addr is counted under: itself, or for IPv6 its
// /IPv6PrefixLen network.
func (a *Admission) key(addr netip.Addr) netip.Addr {
	return GroupAddr(addr, a.cfg.IPv6PrefixLen)
}

// GroupAddr returns the address addr is counted under when IPv6 clients
// are grouped per /ipv6PrefixLen network: an IPv4 address (also one
// written IPv4-in-IPv6) is itself, unmapped; an IPv6 address is the first
// address of its /ipv6PrefixLen network, without zone. A length outside 1
// to 127 groups nothing: addr is returned as it is (unmapped). The zero
// Addr is returned unchanged.
func GroupAddr(addr netip.Addr, ipv6PrefixLen int) netip.Addr {
	addr = addr.Unmap()
	if !addr.Is6() || ipv6PrefixLen < 1 || ipv6PrefixLen >= 128 {
		return addr
	}
	p, err := addr.Prefix(ipv6PrefixLen)
	if err != nil {
		return addr // cannot happen: the length is in range
	}
	return p.Addr()
}
