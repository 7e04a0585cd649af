package ws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/internal/faillog"
	"github.com/chatstream/chatstream/pipeline"
)

// Submitter accepts sends; *pipeline.Pipeline implements it.
type Submitter interface {
	// Begin runs s through the pipeline's chain and queues it for the
	// store without waiting for it; sends begun one after another enter
	// their room in that order. Its Wait returns the outcome: the stored
	// message's id and seq, or the refusal. An error means the message
	// did not enter the pipeline.
	Begin(ctx context.Context, s pipeline.Submission) (*pipeline.Pending, error)
}

// Shedder tells when the instance has more work than CPU; *overload.Detector
// implements it.
type Shedder interface {
	// Shed reports whether to refuse one new send now.
	Shed() bool
}

// Config configures a Gateway. A zero field takes the default in its comment.
type Config struct {
	// AllowedOrigins lists the cross-origin Origins allowed to connect
	// ("*" allows all). Requests without Origin and same-host origins are
	// always allowed.
	AllowedOrigins []string
	// ReadLimit is the largest client frame in bytes; a larger one closes
	// the connection with 1009. Default 64 KiB.
	ReadLimit int64
	// SendQueue is the number of server frames queued per connection before
	// it is dropped as too slow. Default 256.
	SendQueue int
	// SendQueueBytes bounds the bytes of the server frames queued per
	// connection; a frame that would take the queue above it closes the
	// connection as too slow (1008), like a full SendQueue. It also bounds
	// the live messages held for a member while its join reads history. It
	// must be at least twice MaxPageBytes, so that a full page fits in a
	// queue that holds other frames. Default DefaultSendQueueBytes (1 MiB).
	SendQueueBytes int
	// MaxPageMessages is the most messages one joined or history reply
	// carries; at most MaxHistory. Default DefaultMaxPageMessages (500).
	MaxPageMessages int
	// MaxPageBytes bounds the encoded messages of one joined or history
	// reply; a reply holds at least one message, even one larger than
	// this. Default DefaultMaxPageBytes (256 KiB).
	MaxPageBytes int
	// HistoryRate is the sustained bytes per second of history one
	// connection may be sent (its joined and history replies), and
	// HistoryBurst the bytes above it: a frame costs one frame of the
	// frame budget whatever page it asks for, so pages are paid in bytes
	// here too. A join or history frame that finds the budget spent is
	// answered rate_limited with retry_after_ms (the time until it is paid
	// back), without reading anything; the reply that spends it is sent
	// whole. HistoryBurst must be at least MaxPageBytes. Defaults
	// DefaultHistoryRate (1 MiB/s) and DefaultHistoryBurst (4 MiB).
	HistoryRate  float64
	HistoryBurst int
	// MaxRooms is the number of rooms one connection may join. Default 100.
	MaxRooms int
	// MaxBatchBytes caps the frames the writer joins into one WebSocket
	// message. Default 64 KiB.
	MaxBatchBytes int
	// WriteWait bounds every write to a connection: one that has not
	// completed within WriteWait drops the connection. Writes are checked
	// every WriteWait/4 (or PingPeriod/10 when that is shorter), so a
	// stuck one is cut within 1.5 × WriteWait. Default 10s.
	WriteWait time.Duration
	// PongWait is how long a connection may stay silent; every pong or frame
	// extends it. Default 60s.
	PongWait time.Duration
	// PingPeriod is the interval of pings; it must be less than PongWait.
	// Default 9/10 of PongWait.
	PingPeriod time.Duration
	// HistoryTimeout bounds one history read. Default 5s.
	HistoryTimeout time.Duration
	// FrameRate is the sustained number of frames per second a connection
	// may send; FrameBurst the burst above it. Every frame counts: text,
	// binary, invalid, ping and pong. Frames beyond them are discarded
	// unread. Defaults 20 and 40.
	FrameRate  float64
	FrameBurst int
	// FloodFactor and FloodWindow define a flood: a connection that sends
	// more than FloodFactor times what the frame limiter admits within
	// FloodWindow (FrameBurst + FrameRate × FloodWindow frames) is closed
	// with 1008. FloodFactor must be above 1, so a connection that keeps to
	// its rate is never closed. Defaults DefaultFloodFactor (5) and
	// DefaultFloodWindow (10s): 1,200 frames in 10 s with the default rate.
	FloodFactor float64
	FloodWindow time.Duration
	// MaxInFlightSends is the number of a connection's sends that may wait
	// for the store at once: the connection goes on reading meanwhile,
	// so its sends' appends overlap, and a store that cannot keep up
	// refuses them at once instead of their frames waiting unread in the
	// socket. Beyond it the connection waits for an answer before reading
	// on. Default DefaultMaxInFlightSends.
	MaxInFlightSends int
	// MaxInFlightBytes bounds the text those sends hold while they wait,
	// in bytes: a send that would pass it waits for an answer first, as
	// beyond MaxInFlightSends (one send of any size may always wait).
	// Default DefaultMaxInFlightBytes.
	MaxInFlightBytes int
	// Shedder, when set, is asked before each send enters the pipeline;
	// a send it sheds is answered at once with unavailable and a retry
	// hint, at a fraction of the cost of storing it, so an instance
	// offered more than its CPU can take keeps storing at its capacity
	// instead of falling behind on everything. Nil: nothing is shed.
	Shedder Shedder
	// MaxPending bounds the live messages held for one member while its
	// join reads history; it is the hub's (NewHub). Default DefaultMaxPending.
	MaxPending int
	// Auth authenticates connections (--auth none: ?user=; jwt: a token)
	// and checks their room permissions. Nil: --auth none, every room.
	Auth *auth.Authenticator
	// AuthTimeout is how long a connection of --auth jwt may take to
	// send a valid token; it is then closed with 4001. Default
	// DefaultAuthTimeout (10s).
	AuthTimeout time.Duration
	// Logger logs connection events. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config, also used by the command line's flags.
const (
	DefaultReadLimit      = 64 << 10
	DefaultSendQueue      = 256
	DefaultMaxRooms       = 100
	DefaultMaxBatchBytes  = 64 << 10
	DefaultWriteWait      = 10 * time.Second
	DefaultPongWait       = 60 * time.Second
	DefaultHistoryTimeout = 5 * time.Second
	DefaultFrameRate      = 20
	DefaultFrameBurst     = 40
	// DefaultSendQueueBytes is four full pages of the default page budget.
	DefaultSendQueueBytes  = 1 << 20
	DefaultMaxPageMessages = MaxHistory
	DefaultMaxPageBytes    = 256 << 10
	// DefaultHistoryRate and DefaultHistoryBurst: plain joins of all of a
	// connection's rooms fit in the burst (100 rooms of 50 messages of
	// about 300 bytes are 1.5 MB); a client paging back sustains four full
	// pages a second; a resume that missed more than the burst is served
	// at the rate (its refused pages are asked for again).
	DefaultHistoryRate  = 1 << 20
	DefaultHistoryBurst = 4 << 20
	DefaultFloodFactor  = 5
	DefaultFloodWindow  = 10 * time.Second
	// DefaultMaxInFlightSends lets a sender keep a round trip's worth of
	// sends in flight at high rates.
	DefaultMaxInFlightSends = 32
	// DefaultMaxInFlightBytes is the default bound of the text a
	// connection's waiting sends hold: 64 texts of the default largest
	// (pipeline.DefaultMaxTextBytes), but only four of the largest frame
	// (DefaultReadLimit), whose text the chain refuses.
	DefaultMaxInFlightBytes = 256 << 10
)

func (c *Config) setDefaults() {
	if c.ReadLimit == 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.SendQueue == 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.MaxPageMessages == 0 {
		c.MaxPageMessages = DefaultMaxPageMessages
	}
	if c.MaxPageBytes == 0 {
		c.MaxPageBytes = DefaultMaxPageBytes
	}
	if c.HistoryRate == 0 {
		c.HistoryRate = DefaultHistoryRate
	}
	if c.HistoryBurst == 0 {
		c.HistoryBurst = DefaultHistoryBurst
	}
	if c.FloodFactor == 0 {
		c.FloodFactor = DefaultFloodFactor
	}
	if c.FloodWindow == 0 {
		c.FloodWindow = DefaultFloodWindow
	}
	if c.MaxRooms == 0 {
		c.MaxRooms = DefaultMaxRooms
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.WriteWait == 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.PongWait == 0 {
		c.PongWait = DefaultPongWait
	}
	if c.PingPeriod == 0 {
		c.PingPeriod = c.PongWait * 9 / 10
	}
	if c.HistoryTimeout == 0 {
		c.HistoryTimeout = DefaultHistoryTimeout
	}
	if c.FrameRate == 0 {
		c.FrameRate = DefaultFrameRate
	}
	if c.FrameBurst == 0 {
		c.FrameBurst = DefaultFrameBurst
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxInFlightSends == 0 {
		c.MaxInFlightSends = DefaultMaxInFlightSends
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in.
func (c Config) Validate() error {
	if c.ReadLimit <= 0 || c.SendQueue <= 0 || c.SendQueueBytes <= 0 || c.MaxRooms <= 0 || c.MaxBatchBytes <= 0 ||
		c.MaxPageMessages <= 0 || c.MaxPageBytes <= 0 || c.FrameRate <= 0 || c.FrameBurst <= 0 || c.MaxPending <= 0 || c.MaxInFlightSends <= 0 || c.MaxInFlightBytes <= 0 ||
		!(c.HistoryRate > 0) || c.HistoryBurst <= 0 {
		return errors.New("ws: limits must be positive")
	}
	if c.WriteWait <= 0 || c.PongWait <= 0 || c.PingPeriod <= 0 || c.HistoryTimeout <= 0 || c.FloodWindow <= 0 || c.AuthTimeout <= 0 {
		return errors.New("ws: durations must be positive")
	}
	if c.MaxPageMessages > MaxHistory {
		return fmt.Errorf("ws: max page messages %d is above %d", c.MaxPageMessages, MaxHistory)
	}
	if c.SendQueueBytes < 2*c.MaxPageBytes {
		return fmt.Errorf("ws: send queue bytes %d must be at least twice the page budget %d", c.SendQueueBytes, c.MaxPageBytes)
	}
	if c.HistoryRate < 1 {
		return fmt.Errorf("ws: history rate %v must be at least 1 byte a second", c.HistoryRate)
	}
	if c.HistoryBurst < c.MaxPageBytes {
		return fmt.Errorf("ws: history burst %d must be at least the page budget %d", c.HistoryBurst, c.MaxPageBytes)
	}
	if !(c.FloodFactor > 1) {
		return fmt.Errorf("ws: flood factor %v must be above 1", c.FloodFactor)
	}
	if c.PingPeriod >= c.PongWait {
		return fmt.Errorf("ws: ping period %v must be less than pong wait %v", c.PingPeriod, c.PongWait)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("ws: allowed origin %q is not scheme://host[:port]", o)
		}
	}
	return nil
}

// Gateway is the HTTP handler of /ws: it upgrades requests, runs their
// connections and shuts them down gracefully.
type Gateway struct {
	cfg      Config
	hub      *Hub
	sub      Submitter
	hist     pipeline.History
	log      *slog.Logger
	upgrader websocket.Upgrader

	ctx    context.Context
	cancel context.CancelFunc
	// drained ends the waits for the outcomes of sends already in the
	// pipeline: when Shutdown's own context ends (they are answered
	// unavailable), or once Shutdown has returned.
	drained   context.Context
	stopDrain context.CancelFunc
	shutting  atomic.Bool
	conns     sync.WaitGroup
	// histFail reports failing history reads once per outage.
	histFail *faillog.Log
	// workers handle the connections' frames.
	workers *workers
	// writers run the connections' writers, ackers their ackers.
	writers, ackers *pool[*Conn]

	// live holds every connection from its upgrade until its writer has
	// finished it, and clock is the pinger's clock (the Unix nanoseconds
	// of its latest tick). A writer stamps each batch with the clock
	// (Conn.writeSince) instead of giving it a deadline, and the pinger
	// cuts a write stamped more than WriteWait and a tick ago.
	liveMu sync.Mutex
	live   map[*Conn]struct{}
	clock  atomic.Int64
}

// NewGateway returns a gateway that registers connections in hub, submits
// sends to sub and reads history from hist.
func NewGateway(cfg Config, hub *Hub, sub Submitter, hist pipeline.History) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, hub: hub, sub: sub, hist: hist, log: cfg.Logger, histFail: faillog.New(cfg.Logger, "history reads", 0), live: make(map[*Conn]struct{})}
	g.clock.Store(time.Now().UnixNano())
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.drained, g.stopDrain = context.WithCancel(context.Background())
	g.workers = newWorkers(g.ctx)
	g.writers = bounded(g.ctx, (*Conn).writer, maxIdleWriters, maxRunningWriters(), writerStall)
	g.ackers = newPool(g.ctx, (*Conn).acker, maxIdleAckers)
	g.upgrader = websocket.Upgrader{
		// A buffer of its own (not the HTTP server's, which would keep
		// the server's whole request state alive), small because client
		// frames are: a larger frame is read past it.
		ReadBufferSize:  1 << 10,
		WriteBufferSize: 16 << 10,
		// Idle connections hold no write buffer.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     g.checkOrigin,
	}
	go g.pinger()
	return g, nil
}

// checkOrigin allows requests without Origin, same-host origins, and the
// configured ones.
func (g *Gateway) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.ContainsFunc(g.cfg.AllowedOrigins, func(o string) bool {
		return o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}

// ServeHTTP upgrades GET /ws?user=<name> (--auth none) or GET /ws with a
// token (--auth jwt: an Authorization header, or an auth frame after the
// upgrade) to a WebSocket connection and runs it until it ends.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.shutting.Load() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	ident, authed, tokenErr, err := g.identify(r)
	if err != nil {
		reason := asProtocolError(err).Reason
		if errors.Is(err, auth.ErrBadName) {
			reason = strings.TrimPrefix(err.Error(), auth.ErrBadName.Error()+": user name ")
		}
		http.Error(w, "bad user: "+reason, http.StatusBadRequest)
		return
	}
	if !g.checkOrigin(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	// Counted before the upgrade, so a Shutdown that starts meanwhile waits
	// for this connection too; the connection's writer counts it done.
	g.conns.Add(1)
	wsConn, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		g.conns.Done()
		return // the upgrader has answered with an HTTP error
	}
	id := uuid.NewString()
	c := &Conn{
		id: id, ws: wsConn, gw: g,
		log:        g.log.With("conn_id", id),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		release:    admission.Hold(r),
		limiter:    rate.NewLimiter(rate.Limit(g.cfg.FrameRate), g.cfg.FrameBurst),
		history:    rate.NewLimiter(rate.Limit(g.cfg.HistoryRate), g.cfg.HistoryBurst),
		flood:      newFloodMeter(g.cfg, time.Now()),
		rooms:      make(map[string]struct{}),
		authBy:     time.Now().Add(g.cfg.AuthTimeout),
	}
	g.liveMu.Lock()
	g.live[c] = struct{}{}
	g.liveMu.Unlock()
	if authed {
		c.becomeAuthed(ident)
	}
	c.sendCond = sync.NewCond(&c.sendMu)
	c.nextPing.Store(time.Now().Add(g.cfg.PingPeriod).UnixNano())
	g.hub.addConn(c)
	if g.shutting.Load() { // Shutdown began between the check and addConn
		c.close(websocket.CloseGoingAway, "server shutting down", false)
	}
	switch {
	case tokenErr != nil:
		c.refuseAuth(tokenErr, "")
	case authed && g.cfg.Auth.Mode() == auth.ModeJWT:
		c.sendAuthed("")
	}
	// The connection is hijacked: the reader runs on a goroutine of its
	// own, with a small stack, and the HTTP server's request state (its
	// goroutine, request and response buffers) is let go.
	go c.reader()
}

// pinger pings every connection once per PingPeriod, and cuts the writes
// stuck for longer than WriteWait, until the gateway shuts down. One
// goroutine serves every connection, so an idle one holds no timer; each
// is pinged up to a tick early, never late.
func (g *Gateway) pinger() {
	tick := max(min(g.cfg.PingPeriod/10, g.cfg.WriteWait/4), time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			g.clock.Store(now.UnixNano())
			due := now.Add(tick).UnixNano()
			for _, c := range g.hub.allConns() {
				if next := c.nextPing.Load(); next <= due && c.nextPing.CompareAndSwap(next, now.Add(g.cfg.PingPeriod).UnixNano()) {
					c.ping()
				}
			}
			// A batch is stamped with the clock of the tick before it
			// began, up to a tick early: one stamped before this began
			// at least WriteWait ago.
			g.cutWrites(now.Add(-g.cfg.WriteWait - tick).UnixNano())
		}
	}
}

// cutWrites fails the write of every connection whose batch is stamped
// before (see Conn.writeSince): its socket's write deadline is set in the
// past, which ends the write at once with an error, and the writer drops
// the connection. The WebSocket library clears the socket's deadline
// before each of its socket writes, so a cut that lands between two of
// them does not hold; the batch keeps its stamp and the next tick cuts it
// again.
func (g *Gateway) cutWrites(before int64) {
	type stamped struct {
		c     *Conn
		since int64
	}
	var stuck []stamped
	g.liveMu.Lock()
	for c := range g.live {
		if since := c.writeSince.Load(); since != 0 && since < before {
			stuck = append(stuck, stamped{c, since})
		}
	}
	g.liveMu.Unlock()
	for _, s := range stuck {
		// Not if the batch ended meanwhile: the next one is not late.
		if s.c.writeSince.Load() == s.since {
			s.c.log.Debug("dropping the connection: a write took longer than the write wait", "write_wait", g.cfg.WriteWait)
			_ = s.c.ws.NetConn().SetWriteDeadline(time.Unix(1, 0)) // a failure means the connection is ending anyway
		}
	}
}

// forget takes c out of live once its writer has finished it.
func (g *Gateway) forget(c *Conn) {
	g.liveMu.Lock()
	delete(g.live, c)
	g.liveMu.Unlock()
}

// Shutdown stops reading from every connection, lets in-flight sends finish,
// flushes every queue, sends close 1001 and waits for the connections to end
// or ctx to be done.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutting.Store(true)
	// In-flight history reads, and sends still waiting to enter the
	// pipeline, give up now: their connections answer unavailable and
	// close with 1001. Sends already in the pipeline are answered with
	// their outcome first, while ctx lasts.
	g.cancel()
	for _, c := range g.hub.allConns() {
		// Wakes a reader blocked in ReadMessage; one busy handling a frame
		// finishes it first. net.Conn deadlines are safe to set concurrently.
		_ = c.ws.NetConn().SetReadDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() {
		g.conns.Wait()
		close(done)
	}()
	defer g.stopDrain()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ws: shutdown: %w", ctx.Err())
	}
}
