// Package admin serves chatstream's admin HTTP API (docs/ADMIN.md): read-only
// JSON views of the rooms, their messages and the dead letters, paginated,
// behind a bearer token.
//
//	GET /api/rooms?after=&limit=
//	GET /api/rooms/{room}/messages?since=&until=&limit=
//	GET /api/rejected?since=&until=&limit=
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// Page sizes of every list.
const (
	// DefaultLimit is the page size when the request gives none.
	DefaultLimit = 100
	// MaxLimit is the largest page size a request may ask for.
	MaxLimit = 1000
)

// requestTimeout bounds the Redis work of one request; it is below the
// server's 15 s write timeout, so the error still reaches the client.
const requestTimeout = 10 * time.Second

// Source is what the API reads; *replay.Reader implements it over Redis.
// Implementations are safe for concurrent use.
type Source interface {
	// RoomList returns up to limit rooms after the name after, and the
	// name that starts the next page ("" for the last page).
	RoomList(ctx context.Context, after string, limit int) ([]replay.RoomInfo, string, error)
	// RoomMessages returns up to limit messages of room in rng; it fails
	// with replay.ErrUnknownRoom for a room without a stream.
	RoomMessages(ctx context.Context, room string, rng replay.Range, limit int) (replay.Page, error)
	// RejectedPage returns up to limit dead letters in rng.
	RejectedPage(ctx context.Context, rng replay.Range, limit int) (replay.Page, error)
}

var _ Source = (*replay.Reader)(nil)

// Config configures a Handler. A zero field takes the default in its comment.
type Config struct {
	// Token is the bearer token every request must carry: at least
	// MinTokenBytes after trimming surrounding white space. Required.
	Token string
	// Source serves the data. Nil (a backend the API cannot read, such as
	// the in-memory one): every authorised request gets 501.
	Source Source
	// Logger receives request failures. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock relative bounds (since=-15m) are resolved against.
	// Default time.Now.
	Now func() time.Time
	// ClientAddr names the client a request's wrong tokens are counted
	// and throttled under. It should group clients as the WebSocket
	// limits do (admission.Admission.ClientKey): an IPv4 address is one
	// client, an IPv6 network (/64 by default) is one client, or an
	// attacker with one network rotates its addresses and is never
	// throttled. Behind a reverse proxy it must also give the address
	// the proxy forwards, or one client's wrong tokens throttle
	// everybody. Default the TCP peer's address, IPv6 grouped per
	// /admission.DefaultIPv6PrefixLen (admission.GroupAddr).
	ClientAddr func(*http.Request) netip.Addr
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	t := strings.TrimSpace(c.Token)
	if t == "" {
		return errors.New("admin: token is required")
	}
	if len(t) < MinTokenBytes {
		return fmt.Errorf("admin: the admin token has %d bytes; at least %d are needed (make one with: openssl rand -hex 32)", len(t), MinTokenBytes)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ClientAddr == nil {
		c.ClientAddr = peerAddr
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Handler serves the admin API. It is safe for concurrent use.
type Handler struct {
	cfg Config
	// tokenSum is the SHA-256 of the token: comparing digests in constant
	// time hides the token's length too.
	tokenSum [sha256.Size]byte
	mux      *http.ServeMux
	// guard counts and throttles failed requests per client address.
	guard *failureGuard
}

// New returns the API's handler, to be mounted at /api/.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	h := &Handler{cfg: cfg, tokenSum: sha256.Sum256([]byte(strings.TrimSpace(cfg.Token))), mux: http.NewServeMux(), guard: newFailureGuard(cfg.Logger)}
	h.mux.HandleFunc("GET /api/rooms", h.rooms)
	h.mux.HandleFunc("GET /api/rooms/{room}/messages", h.messages)
	h.mux.HandleFunc("GET /api/rejected", h.rejected)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return h, nil
}

// Failures returns the number of requests refused for a missing or wrong
// token since the handler started.
func (h *Handler) Failures() int64 { return h.guard.failures.Load() }

// ServeHTTP checks the bearer token, then routes the request. A client
// address that failed FailureBurst times gets 429 with Retry-After for
// every request until it may fail again (one per FailureEvery).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	addr, now := h.cfg.ClientAddr(r), h.cfg.Now()
	if wait := h.guard.throttled(addr, now); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
		writeError(w, http.StatusTooManyRequests, "too many requests with a wrong token from this address; retry later")
		return
	}
	if !h.authorised(r) {
		h.guard.failed(addr, r, now)
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatstream-admin"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	if h.cfg.Source == nil {
		writeError(w, http.StatusNotImplemented, "the admin API needs the Redis backend")
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) authorised(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

// roomsResponse is the body of GET /api/rooms.
type roomsResponse struct {
	Rooms []replay.RoomInfo `json:"rooms"`
	Next  string            `json:"next"`
}

func (h *Handler) rooms(w http.ResponseWriter, r *http.Request) {
	limit, ok := parseLimit(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rooms, next, err := h.cfg.Source.RoomList(ctx, r.URL.Query().Get("after"), limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, roomsResponse{Rooms: rooms, Next: next})
}

// messagesResponse is the body of GET /api/rooms/{room}/messages.
type messagesResponse struct {
	Messages []replay.MessageRecord `json:"messages"`
	Next     string                 `json:"next"`
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if err := pipeline.ValidateRoom(room); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rng, limit, ok := h.parseQuery(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	page, err := h.cfg.Source.RoomMessages(ctx, room, rng, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := messagesResponse{Messages: make([]replay.MessageRecord, len(page.Entries)), Next: page.Next}
	for i, e := range page.Entries {
		out.Messages[i] = e.Record()
	}
	writeJSON(w, http.StatusOK, out)
}

// rejectedResponse is the body of GET /api/rejected.
type rejectedResponse struct {
	Rejected []replay.RejectedRecord `json:"rejected"`
	Next     string                  `json:"next"`
}

func (h *Handler) rejected(w http.ResponseWriter, r *http.Request) {
	rng, limit, ok := h.parseQuery(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	page, err := h.cfg.Source.RejectedPage(ctx, rng, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := rejectedResponse{Rejected: make([]replay.RejectedRecord, len(page.Entries)), Next: page.Next}
	for i, e := range page.Entries {
		out.Rejected[i] = e.Rejected()
	}
	writeJSON(w, http.StatusOK, out)
}

// parseQuery reads since, until and limit, answering 400 when one is bad.
func (h *Handler) parseQuery(w http.ResponseWriter, r *http.Request) (replay.Range, int, bool) {
	q := r.URL.Query()
	rng, err := replay.ParseRange(q.Get("since"), q.Get("until"), h.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return replay.Range{}, 0, false
	}
	limit, ok := parseLimit(w, r)
	return rng, limit, ok
}

// parseLimit reads limit (default DefaultLimit, 1..MaxLimit), answering
// 400 when it is bad.
func parseLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return DefaultLimit, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxLimit {
		writeError(w, http.StatusBadRequest, "limit must be a number from 1 to "+strconv.Itoa(MaxLimit))
		return 0, false
	}
	return n, true
}

// fail answers a Source error: 404 for an unknown room, 503 when Redis is
// unavailable, 500 otherwise.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, replay.ErrUnknownRoom):
		writeError(w, http.StatusNotFound, "unknown room")
	case errors.Is(err, pipeline.ErrUnavailable):
		h.cfg.Logger.Warn("admin request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "backend unavailable")
	default:
		h.cfg.Logger.Error("admin request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// errorResponse is the body of every error answer.
type errorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone
}
