// Package server assembles a chatstream instance: backend, pipeline, hub,
// gateway and the HTTP endpoints.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/chatstream/chatstream/admin"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
	"github.com/chatstream/chatstream/web"
	"github.com/chatstream/chatstream/ws"
)

// Config configures a Server. A zero field takes the default in its comment.
type Config struct {
	// Addr is the listen address. Default ":8080".
	Addr string
	// Backend stores and delivers messages. Default: a new in-memory backend.
	Backend pipeline.Backend
	// RoomMaxLen is the per-room history of the default in-memory backend.
	// Default 10,000.
	RoomMaxLen int
	// MaxTextBytes limits a message's text. Default 4096.
	MaxTextBytes int
	// Moderators run in order at the pipeline's plugin point.
	Moderators []pipeline.Moderator
	// WS configures the WebSocket gateway.
	WS ws.Config
	// ShutdownTimeout bounds the graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration
	// Logger is the server's logger. Default slog.Default().
	Logger *slog.Logger
	// InstanceID names this instance in the backend's instance records.
	// Default: host name, port and a random suffix.
	InstanceID string
	// PresenceEvery is the interval of presence updates. Default 1s.
	PresenceEvery time.Duration
	// ReportEvery is the interval of instance records (read positions per
	// partition) for backends that keep them. Default 5s.
	ReportEvery time.Duration
	// AdminToken turns on the admin HTTP API under /api/ (docs/ADMIN.md);
	// every request must carry it as a bearer token. Empty: the API is off
	// and /api/ answers 404. With a backend other than Redis the API
	// answers 501.
	AdminToken string
}

// presenceBackend is implemented by backends that share presence between
// instances (the Redis backend).
type presenceBackend interface {
	NewPresenceStore(instanceID string) *redisstore.PresenceStore
}

// instanceRecorder is implemented by backends that record running
// instances and their read positions (the Redis backend).
type instanceRecorder interface {
	RecordInstance(ctx context.Context, info redisstore.InstanceInfo) error
}

// Server is one chatstream instance.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	http     *http.Server
	backend  pipeline.Backend
	pipeline *pipeline.Pipeline
	hub      *ws.Hub
	gateway  *ws.Gateway
	admin    http.Handler
	static   http.Handler

	// gapHandled is the position per partition at which a feed gap was
	// last handled; owned by the report goroutine.
	gapHandled map[int]string
}

// New builds a server and opens its listener, so Addr is known before Run.
// The server owns cfg.Backend from here on and closes it when Run returns.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PresenceEvery == 0 {
		cfg.PresenceEvery = time.Second
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = 5 * time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Backend == nil {
		cfg.Backend = memstore.New(memstore.Config{RoomMaxLen: cfg.RoomMaxLen, Logger: cfg.Logger})
	}
	if cfg.WS.Logger == nil {
		cfg.WS.Logger = cfg.Logger
	}
	s := &Server{cfg: cfg, log: cfg.Logger, backend: cfg.Backend, gapHandled: make(map[int]string)}
	s.hub = ws.NewHub(cfg.Logger, cfg.WS.MaxPending)
	p, err := pipeline.New(pipeline.Config{
		Backend: cfg.Backend, Replier: s.hub, Deliverer: s.hub, Logger: cfg.Logger,
		MaxTextBytes: cfg.MaxTextBytes, Moderators: cfg.Moderators,
	})
	if err != nil {
		return nil, err
	}
	s.pipeline = p
	s.gateway, err = ws.NewGateway(cfg.WS, s.hub, p, cfg.Backend)
	if err != nil {
		return nil, err
	}
	if s.admin, err = newAdmin(cfg); err != nil {
		return nil, err
	}
	if s.static, err = staticHandler(web.FS()); err != nil {
		return nil, fmt.Errorf("server: page files: %w", err)
	}
	s.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	if cfg.InstanceID == "" {
		host, _ := os.Hostname() // empty on error: the suffix keeps it unique
		s.cfg.InstanceID = fmt.Sprintf("%s-%s-%s", host, portOf(s.ln.Addr()), uuid.NewString()[:8])
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
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

// Hub returns the server's hub.
func (s *Server) Hub() *ws.Hub { return s.hub }

// Pipeline returns the server's pipeline.
func (s *Server) Pipeline() *pipeline.Pipeline { return s.pipeline }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", s.gateway)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n")) // the client may be gone
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /api/", s.admin)
	mux.Handle("GET /", secureHeaders(s.static))
	return mux
}

// newAdmin returns the admin API's handler: 404 for everything without a
// token, reading Redis when the backend is Redis.
func newAdmin(cfg Config) (http.Handler, error) {
	if cfg.AdminToken == "" {
		return http.NotFoundHandler(), nil
	}
	acfg := admin.Config{Token: cfg.AdminToken, Logger: cfg.Logger}
	if rb, ok := cfg.Backend.(*redisstore.Backend); ok {
		acfg.Source = replay.NewReader(rb, replay.Config{Logger: cfg.Logger})
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
	if err := s.backend.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "backend unavailable: %v\n", err) // the client may be gone
		return
	}
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

	if rec, ok := s.backend.(instanceRecorder); ok {
		wg.Go(func() { s.report(pctx, rec) })
	}
	var presence ws.PresenceStore = ws.LocalPresence{}
	if pb, ok := s.backend.(presenceBackend); ok {
		presence = pb.NewPresenceStore(s.cfg.InstanceID)
	}
	wg.Go(func() { s.hub.RunPresence(pctx, presence, s.cfg.PresenceEvery) })

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()
	s.log.Info("chatstream listening", "addr", s.ln.Addr().String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("server: serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if e := s.http.Shutdown(sctx); e != nil && !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("server: http shutdown: %w", e))
	}
	if e := s.gateway.Shutdown(sctx); e != nil {
		err = errors.Join(err, e)
	}
	stopPipeline()
	wg.Wait()
	if e := s.backend.Close(); e != nil {
		err = errors.Join(err, fmt.Errorf("server: close backend: %w", e))
	}
	if pipeErr != nil {
		err = errors.Join(err, pipeErr)
	}
	s.log.Info("chatstream stopped")
	return err
}

// InstanceID returns the instance's name in the backend's records.
func (s *Server) InstanceID() string { return s.cfg.InstanceID }

// report records the instance and its read positions until ctx is done.
func (s *Server) report(ctx context.Context, rec instanceRecorder) {
	started := time.Now()
	tick := time.NewTicker(s.cfg.ReportEvery)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.ReportEvery)
		err := rec.RecordInstance(rctx, redisstore.InstanceInfo{
			ID: s.cfg.InstanceID, Addr: s.ln.Addr().String(), StartedAt: started,
			Positions: s.pipeline.Positions(),
		})
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Debug("instance record failed", "err", err)
		}
		if og, ok := s.backend.(oldestGetter); ok {
			s.checkGaps(ctx, og)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// oldestGetter is implemented by backends whose feed can lose entries to
// trimming (the Redis backend).
type oldestGetter interface {
	Oldest(ctx context.Context, partition int) (string, error)
}

// checkGaps compares how far this instance has read each partition with
// the oldest entry the partition still keeps. A position older than that
// means trimming removed entries this instance never delivered: the members
// of that partition's rooms are closed with 1012 so their clients resume
// from the room streams, which keep far more. Each gap is handled once.
func (s *Server) checkGaps(ctx context.Context, og oldestGetter) {
	s.checkGapsAt(ctx, og, s.pipeline.Positions())
}

func (s *Server) checkGapsAt(ctx context.Context, og oldestGetter, positions []string) {
	for p, pos := range positions {
		if pos == "" || s.gapHandled[p] == pos {
			continue
		}
		oldest, err := og.Oldest(ctx, p)
		if err != nil || oldest == "" || pipeline.CompareSeq(pos, oldest) >= 0 {
			continue
		}
		s.gapHandled[p] = pos
		n := s.hub.Resync(func(room string) bool { return pipeline.PartitionOf(room, len(positions)) == p })
		s.log.Error("delivery gap: the partition bus was trimmed past this instance's position; members resume",
			"partition", p, "position", pos, "oldest", oldest, "closed", n)
	}
}

func portOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(t.Port)
	}
	return "0"
}
