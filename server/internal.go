package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/metrics"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/version"
)

// OpsConfig configures what an instance offers its operators: the internal
// listener (metrics, health, profiling) and the startup summary.
type OpsConfig struct {
	// InternalAddr is the address of the internal listener, which serves
	// /metrics (Prometheus), /healthz (JSON: instance and version),
	// /readyz (as the public one) and /debug/pprof/. It must not be
	// reachable by the public. Empty: no internal listener and no
	// metrics. The command line's default is DefaultInternalAddr.
	InternalAddr string
	// Moderation, when set, is read for the moderation decision counters
	// (a moderation.Chain).
	Moderation metrics.ModerationSource
	// Summary is logged once at startup with the instance id, version,
	// addresses and backend: the rest of the configuration, secrets
	// already redacted. Nil: nothing more.
	Summary []slog.Attr
}

// DefaultInternalAddr is the command line's default internal listener:
// loopback only.
const DefaultInternalAddr = "127.0.0.1:9091"

// Limits of the internal listener's HTTP server.
const (
	// InternalWriteTimeout bounds writing an internal response; it must
	// exceed the longest CPU profile or trace asked of /debug/pprof/
	// (?seconds=60 at most), which net/http/pprof refuses otherwise.
	InternalWriteTimeout = 65 * time.Second
)

// ops is the internal listener and the metrics of a Server.
type ops struct {
	cfg OpsConfig
	// startedAt is when the instance was made.
	startedAt time.Time
	metrics   *metrics.Metrics // nil without an internal listener
	ln        net.Listener
	http      *http.Server
	// served is closed when the internal server's Serve returned.
	served chan struct{}
	// shutdown makes the internal server's stop idempotent.
	shutdown sync.Once
}

// newOps returns the metrics for cfg (nil when there is no internal
// listener); the listener is opened by listen.
func newOps(cfg OpsConfig) *ops {
	o := &ops{cfg: cfg, startedAt: time.Now()}
	if cfg.InternalAddr != "" {
		o.metrics = metrics.New()
	}
	return o
}

// observer returns what the pipeline tells of its events: the metrics, or
// nil.
func (o *ops) observer() pipeline.Observer {
	if o.metrics == nil {
		return nil // an untyped nil: no observer
	}
	return o.metrics
}

// instrument returns the ingest's metrics middleware: Watermill's handler
// metrics, or nil.
func (o *ops) instrument() message.HandlerMiddleware {
	if o.metrics == nil {
		return nil
	}
	return o.metrics.IngestMiddleware()
}

// listen registers the server's counters and opens the internal listener.
func (o *ops) listen(s *Server) error {
	if o.metrics == nil {
		return nil
	}
	src := metrics.Sources{
		Pipeline: s.pipeline, Hub: s.hub, Admission: s.admission, Moderation: o.cfg.Moderation,
		StartedAt: s.ops.startedAt,
	}
	if s.shed != nil {
		src.Overload = s.shed
	}
	if l, ok := s.backend.Buses.(pipeline.BusLagger); ok {
		src.Lags = l
	}
	if m, ok := s.backend.Store.(metrics.MemorySource); ok {
		src.Memory = m
	}
	s.hub.SetObserver(o.metrics)
	if err := o.metrics.Watch(src); err != nil {
		return fmt.Errorf("server: metrics: %w", err)
	}
	ln, err := net.Listen("tcp", o.cfg.InternalAddr)
	if err != nil {
		return fmt.Errorf("server: internal listener: %w", err)
	}
	o.ln = ln
	o.http = &http.Server{
		Handler:           o.routes(s),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      InternalWriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// routes are the internal listener's endpoints.
func (o *ops) routes(s *Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		v := version.Read()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(InternalHealth{ // the client may be gone
			Status: "ok", Instance: s.cfg.InstanceID, Version: v.Short(), Revision: v.Revision, Go: v.Go,
			StartedAt: s.ops.startedAt.UTC().Format(time.RFC3339),
		})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// InternalHealth is the body of the internal listener's /healthz.
type InternalHealth struct {
	// Status is "ok".
	Status string `json:"status"`
	// Instance is the instance's id in the backend's records.
	Instance string `json:"instance"`
	// Version is the build in one word (version.Info.Short); Revision
	// and Go are the VCS revision and the Go version.
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Go       string `json:"go"`
	// StartedAt is when the instance started (RFC 3339).
	StartedAt string `json:"started_at"`
}

// serve serves the internal listener until stop.
func (o *ops) serve(log *slog.Logger) {
	if o.http == nil {
		return
	}
	o.served = make(chan struct{})
	go func() {
		defer close(o.served)
		if err := o.http.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("internal listener stopped", "addr", o.ln.Addr().String(), "err", err)
		}
	}()
}

// stop shuts the internal listener down within ctx.
func (o *ops) stop(ctx context.Context) error {
	if o.http == nil {
		return nil
	}
	var err error
	o.shutdown.Do(func() {
		if e := o.http.Shutdown(ctx); e != nil {
			err = fmt.Errorf("server: internal listener shutdown: %w", e)
		}
		if o.served != nil {
			<-o.served
		}
	})
	return err
}

// backendError counts a failed backend operation when there are metrics.
func (o *ops) backendError(op string) {
	if o.metrics != nil {
		o.metrics.BackendError(op)
	}
}

// InternalAddr returns the internal listener's address, or nil without
// one.
func (s *Server) InternalAddr() net.Addr {
	if s.ops.ln == nil {
		return nil
	}
	return s.ops.ln.Addr()
}

// InternalURL returns the internal listener's base URL, or "" without one.
func (s *Server) InternalURL() string {
	if a := s.InternalAddr(); a != nil {
		return "http://" + a.String()
	}
	return ""
}

// logStartup writes the one startup line: instance, version, addresses,
// backend, and the configuration summary as the group flags.
func (s *Server) logStartup() {
	attrs := []slog.Attr{
		slog.String("instance", s.cfg.InstanceID),
		slog.String("version", version.Read().Short()),
		slog.String("addr", s.ln.Addr().String()),
		slog.String("internal_addr", addrText(s.InternalAddr())),
		slog.String("backend", s.backend.Kind),
		slog.Int("partitions", s.backend.Feed.Partitions()),
		slog.Bool("admin_api", s.cfg.AdminToken != ""),
		slog.Int("moderators", len(s.cfg.Moderators)),
	}
	if len(s.cfg.Ops.Summary) > 0 {
		// The flags as given, apart from the effective values above
		// (addr and partitions appear in both, and may differ).
		attrs = append(attrs, slog.Attr{Key: "flags", Value: slog.GroupValue(s.cfg.Ops.Summary...)})
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "chatstream starting", attrs...)
}

func addrText(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}
