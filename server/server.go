// Package server assembles a chatstream instance from a backend (package
// backend): pipeline, hub, gateway and the HTTP endpoints.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/chatstream/chatstream/admin"
	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/faillog"
	"github.com/chatstream/chatstream/internal/overload"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/version"
	"github.com/chatstream/chatstream/web"
	"github.com/chatstream/chatstream/ws"
)

// Config configures a Server. A zero field takes the default in its comment.
type Config struct {
	// Addr is the listen address. Default DefaultAddr.
	Addr string
	// Backend stores and delivers messages (backend.Open). Default: a new
	// memory backend.
	Backend *backend.Backend
	// RoomMaxLen is the per-room history of the default memory backend.
	// Default pipeline.DefaultRoomMaxLen.
	RoomMaxLen int
	// MaxTextBytes limits a message's text. Default
	// pipeline.DefaultMaxTextBytes.
	MaxTextBytes int
	// Moderators run in order at the pipeline's plugin point.
	Moderators []pipeline.Moderator
	// WS configures the WebSocket gateway.
	WS ws.Config
	// Admission limits the WebSocket upgrades of /ws: connections on the
	// instance and per client address, handshakes per second per client
	// address, and the proxies trusted to name the client. Each zero field
	// takes the default in its comment (admission.Config); Logger defaults
	// to the server's.
	Admission admission.Config
	// ShutdownTimeout bounds the graceful shutdown. Default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger is the server's logger. Default slog.Default().
	Logger *slog.Logger
	// InstanceID names this instance in the backend's instance records.
	// Default: host name, port and a random suffix.
	InstanceID string
	// PresenceEvery is the interval of presence updates. Default
	// DefaultPresenceEvery.
	PresenceEvery time.Duration
	// ReportEvery is the interval of instance records (read positions per
	// partition) and feed gap checks. Default pipeline.DefaultReportEvery.
	ReportEvery time.Duration
	// AdminToken turns on the admin HTTP API under /api/ (docs/ADMIN.md);
	// every request must carry it as a bearer token. Empty: the API is off
	// and /api/ answers 404. Without a stream reader (the memory backend)
	// the API answers 501.
	AdminToken string
	// Page tells the chat page how to sign in, served at web.ConfigPath:
	// its TokenURL and SignInURL. Its Auth is always the mode of Auth, so
	// the page signs in the way the gateway authenticates.
	Page web.Config
	// Auth configures authentication: --auth none (names from ?user=,
	// the default) or jwt (names from signed tokens), the key, and the
	// rooms policy (auth.Config). Its Logger defaults to the server's.
	Auth auth.Config
	// Ops configures the internal listener (metrics, health, profiling)
	// and the startup summary. Zero: no internal listener.
	Ops OpsConfig
	// ShedLatency is the Go scheduler's latency (the 90th percentile over
	// each 100 ms) above which the instance sheds a growing share of new
	// sends, answering them unavailable with a retry hint (package
	// internal/overload). Zero: never shed. Off by default: a burst of
	// fan-out on a busy machine can raise the latency for a moment
	// without the instance being short of CPU for long.
	ShedLatency time.Duration
}

// Defaults of Config, also used by the command line's flags.
const (
	DefaultAddr            = ":8080"
	DefaultShutdownTimeout = 10 * time.Second
	DefaultPresenceEvery   = time.Second
)

// Limits of the HTTP server. A hijacked WebSocket connection sets its own
// deadlines (ws.Config); these bound everything before the upgrade and
// every other request, so a client that trickles or never finishes a
// request cannot hold a descriptor for long.
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout bounds reading a whole request.
	ReadTimeout = 15 * time.Second
	// WriteTimeout bounds writing a response.
	WriteTimeout = 15 * time.Second
	// IdleTimeout is how long a keep-alive connection waits for its next
	// request.
	IdleTimeout = 60 * time.Second
	// MaxHeaderBytes bounds a request's headers (net/http allows 4 KiB
	// above it); larger ones are answered 431.
	MaxHeaderBytes = 16 << 10
)

// setDefaults fills in every zero field but Backend and InstanceID, which
// New makes.
func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PresenceEvery == 0 {
		c.PresenceEvery = DefaultPresenceEvery
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.WS.Logger == nil {
		c.WS.Logger = c.Logger
	}
	if c.Admission.Logger == nil {
		c.Admission.Logger = c.Logger
	}
	if c.Auth.Logger == nil {
		c.Auth.Logger = c.Logger
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	if c.PresenceEvery < 0 || c.ReportEvery < 0 || c.ShutdownTimeout < 0 || c.RoomMaxLen < 0 || c.MaxTextBytes < 0 || c.ShedLatency < 0 {
		return errors.New("server: limits must not be negative")
	}
	return nil
}

// Server is one chatstream instance.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	http     *http.Server
	backend  *backend.Backend
	pipeline *pipeline.Pipeline
	hub      *ws.Hub
	// shed is the overload detector; nil when shedding is off.
	shed    *overload.Detector
	gateway *ws.Gateway
	// admission guards the gateway; its Open count is the open sockets.
	admission *admission.Admission
	admin     http.Handler
	static    http.Handler
	// pageConfig serves cfg.Page to the chat page.
	pageConfig http.Handler
	// notReady reports failed readiness checks once per outage.
	notReady *faillog.Log
	// ops is the internal listener and the metrics.
	ops *ops
	// auth verifies tokens and room permissions; Run closes it.
	auth *auth.Authenticator
}

// New builds a server and opens its listener, so Addr is known before Run.
// The server owns cfg.Backend from here on and closes it when Run returns.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Backend == nil {
		b, err := backend.Open(backend.Config{RoomMaxLen: cfg.RoomMaxLen, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		cfg.Backend = b
	}
	s := &Server{cfg: cfg, log: cfg.Logger, backend: cfg.Backend, notReady: faillog.New(cfg.Logger, "readiness check (backend writes)", 0),
		ops: newOps(cfg.Ops)}
	var err error
	if s.static, err = staticHandler(web.FS()); err != nil {
		return nil, fmt.Errorf("server: page files: %w", err)
	}
	if s.admission, err = admission.New(cfg.Admission); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if s.admin, err = newAdmin(cfg, s.admission.ClientKey); err != nil {
		return nil, err
	}
	if s.auth, err = auth.New(cfg.Auth); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	page := cfg.Page
	page.Auth = s.auth.Mode()
	if s.pageConfig, err = web.ConfigHandler(page); err != nil {
		s.auth.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	s.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.auth.Close()
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	if cfg.InstanceID == "" {
		host, _ := os.Hostname() // empty on error: the suffix keeps it unique
		s.cfg.InstanceID = fmt.Sprintf("%s-%s-%s", host, portOf(s.ln.Addr()), uuid.NewString()[:8])
	}
	s.hub = ws.NewHub(cfg.Logger, cfg.WS.MaxPending)
	b := cfg.Backend
	s.pipeline, err = pipeline.New(pipeline.Config{
		Ingest: pipeline.IngestConfig{
			Store: b.Store, DeadLetters: b.DeadLetters, Logger: cfg.Logger,
			MaxTextBytes: cfg.MaxTextBytes, Moderators: cfg.Moderators,
			Observer: s.ops.observer(), Instrument: s.ops.instrument(),
		},
		Delivery: pipeline.DeliveryConfig{
			Feed: b.Feed, Deliverer: s.hub, Logger: cfg.Logger,
			Instance: pipeline.InstanceInfo{
				ID: s.cfg.InstanceID, Addr: s.ln.Addr().String(), StartedAt: s.ops.startedAt, Version: version.Read().Short(),
			},
			Instances: b.Instances, Buses: b.Buses, ReportEvery: cfg.ReportEvery, Observer: s.ops.observer(),
		},
	})
	if err == nil && cfg.ShedLatency > 0 {
		s.shed, err = overload.New(overload.Config{Target: cfg.ShedLatency})
	}
	if err == nil {
		wcfg := cfg.WS
		wcfg.Auth = s.auth
		if s.shed != nil {
			wcfg.Shedder = s.shed
		}
		s.gateway, err = ws.NewGateway(wcfg, s.hub, s.pipeline, b.History)
	}
	if err == nil {
		err = s.ops.listen(s)
	}
	if err != nil {
		_ = s.ln.Close() // nothing was served
		s.auth.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL returns the server's base URL on loopback, for tests and tools.
func (s *Server) URL() string {
	return "http://" + s.ln.Addr().String()
}

// Pipeline returns the server's pipeline.
func (s *Server) Pipeline() *pipeline.Pipeline { return s.pipeline }

// Hub returns the server's hub: its connections, rooms and counters.
func (s *Server) Hub() *ws.Hub { return s.hub }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// The gateway's handler blocks for the socket's life, so admission
	// counts a connection until it ends.
	mux.Handle("GET /ws", s.admission.Wrap(s.gateway))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n")) // the client may be gone
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /api/", s.admin)
	mux.Handle("GET "+web.ConfigPath, s.pageConfig)
	mux.Handle("GET /", secureHeaders(s.static))
	return mux
}

// newAdmin returns the admin API's handler: 404 for everything without a
// token, reading the backend's streams when it has a reader. client names
// a request's client (behind trusted proxies, the address they forward)
// for the throttle of wrong tokens.
func newAdmin(cfg Config, client func(*http.Request) netip.Addr) (http.Handler, error) {
	if cfg.AdminToken == "" {
		return http.NotFoundHandler(), nil
	}
	acfg := admin.Config{Token: cfg.AdminToken, Logger: cfg.Logger, ClientAddr: client}
	if cfg.Backend.Streams != nil {
		acfg.Source = cfg.Backend.Streams
	}
	h, err := admin.New(acfg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return h, nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.backend.Health.Ping(ctx); err != nil {
		// The body names no internal address; the log says what failed,
		// once per outage.
		s.notReady.Fail("", err)
		s.ops.backendError(pipeline.OpPing)
		http.Error(w, "backend unavailable", http.StatusServiceUnavailable)
		return
	}
	s.notReady.OK("")
	select {
	case <-s.pipeline.Running():
	default:
		http.Error(w, "pipeline starting", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n")) // the client may be gone
}

// contentSecurityPolicy allows only the page's own scripts, styles and
// WebSocket; no inline script.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// Run serves until ctx is done, then shuts down gracefully: no new
// connections, every socket drained and closed with 1001, the pipeline
// stopped, the backend closed.
func (s *Server) Run(ctx context.Context) error {
	pctx, stopPipeline := context.WithCancel(context.Background())
	defer stopPipeline()
	var wg sync.WaitGroup
	var pipeErr error
	wg.Go(func() { pipeErr = s.pipeline.Run(pctx) })

	presence := s.backend.NewPresence(s.cfg.InstanceID)
	wg.Go(func() { s.hub.RunPresence(pctx, presence, s.cfg.PresenceEvery) })
	if s.shed != nil {
		wg.Go(func() { s.shed.Run(pctx) })
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()
	s.ops.serve(s.log)
	s.logStartup()
	s.log.Info("chatstream listening", "addr", s.ln.Addr().String(), "backend", s.backend.Kind, "instance", s.cfg.InstanceID)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("server: serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.admission.Close() // upgrades from here on are refused with 503
	// The sockets are closed (1001) while plain HTTP requests finish,
	// not after them: a client that trickles a request's body must not
	// use up the sockets' time. Requests still running when the time is
	// up are cut off; that is not a failed shutdown.
	var gwErr error
	var gw sync.WaitGroup
	gw.Go(func() { gwErr = s.gateway.Shutdown(sctx) })
	if e := s.http.Shutdown(sctx); e != nil && !errors.Is(e, http.ErrServerClosed) {
		_ = s.http.Close() // the listeners are closed; this ends the requests left
		s.log.Warn("HTTP requests still running at the end of the shutdown were cut off", "err", e)
	}
	gw.Wait()
	if gwErr != nil {
		err = errors.Join(err, gwErr)
	}
	if e := s.ops.stop(sctx); e != nil {
		err = errors.Join(err, e)
	}
	stopPipeline()
	wg.Wait()
	s.auth.Close()
	if e := s.backend.Close(); e != nil {
		err = errors.Join(err, fmt.Errorf("server: %w", e))
	}
	if pipeErr != nil {
		err = errors.Join(err, pipeErr)
	}
	s.log.Info("chatstream stopped")
	return err
}

// InstanceID returns the instance's name in the backend's records.
func (s *Server) InstanceID() string { return s.cfg.InstanceID }

func portOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(t.Port)
	}
	return "0"
}

// ReloadRoomsPolicy reads the rooms policy file (Config.Auth.RoomsPolicy)
// again and puts it in force for every later join and send; an error
// leaves the policy in force unchanged. Without a policy it does nothing.
func (s *Server) ReloadRoomsPolicy() error { return s.auth.ReloadPolicy() }
