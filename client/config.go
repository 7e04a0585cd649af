package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Config configures a Client. A zero field takes the default in its
// comment; Dial fills the defaults in and then validates.
type Config struct {
	// URL is the server: its base URL (http://host:8080) or its WebSocket
	// endpoint (ws://host:8080/ws). http and https become ws and wss; an
	// empty path becomes /ws. Required.
	URL string
	// User is the user name the client connects as (PROTOCOL.md §3): 1–32
	// characters. Required. The client uses its NFKC form, as the server
	// does ("ａｌｉｃｅ" is "alice").
	User string
	// Header holds extra request headers of every handshake, such as
	// Origin or a fixed "Authorization: Bearer <token>". Dial copies it.
	Header http.Header
	// Token, when set, is called before every handshake, reconnects
	// included, and its result is sent as "Authorization: Bearer <token>",
	// replacing any Authorization in Header. This is how a short-lived
	// token is refreshed: a server that closes with 4002 (token expired)
	// gets a fresh one on the next dial, after the shortest backoff. An
	// error fails that attempt: Dial returns it, a reconnect tries again
	// after its backoff. Its ctx ends with the client.
	Token func(ctx context.Context) (string, error)
	// Dialer opens the WebSocket. Default: a dialer with the environment's
	// proxy and a handshake timeout of DefaultHandshakeTimeout.
	Dialer *websocket.Dialer
	// Logger logs connections, disconnections and failures, with the key
	// "user"; never message text or tokens. Default slog.Default().
	Logger *slog.Logger

	// EventBuffer is the capacity of the Events channel. The client never
	// blocks on it: a room whose event does not fit falls behind and is
	// re-fetched later (see the package documentation). Default
	// DefaultEventBuffer.
	EventBuffer int
	// MaxPending is the most sends that wait for their ack at once, queued
	// or on the wire; one more Send waits for a slot until its ctx ends.
	// Default DefaultMaxPending.
	MaxPending int
	// MaxFrameBytes is the largest client frame the client writes; a Send
	// whose frame is larger fails at once with CodeTooLarge instead of
	// making the server close the connection (1009). Keep it at most the
	// server's --read-limit. Default DefaultMaxFrameBytes.
	MaxFrameBytes int

	// MinBackoff and MaxBackoff bound the wait before a reconnect: attempt
	// k waits a random time in [0, min(MaxBackoff, MinBackoff·2^k)) ("full
	// jitter"); MinBackoff must not exceed MaxBackoff. Defaults
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// StableAfter is how long a connection must have lasted for the next
	// reconnect to start the backoff over; one that drops sooner keeps the
	// delay growing. Default DefaultStableAfter.
	StableAfter time.Duration

	// FrameRate and FrameBurst limit the frames the client writes per
	// second (a token bucket). Keep them at most the server's
	// --frame-rate and --frame-burst: frames beyond those are refused with
	// rate_limited. Defaults DefaultFrameRate and DefaultFrameBurst.
	FrameRate  float64
	FrameBurst int

	// WriteWait is the deadline of every write. Default DefaultWriteWait.
	WriteWait time.Duration
	// PongWait is how long the connection may stay silent before the
	// client drops it and reconnects; every frame, ping and pong extends
	// it, and the client pings every 9/10 of it. Default DefaultPongWait.
	PongWait time.Duration
	// ReadLimit is the largest server message the client reads; a larger
	// one ends the connection. Default DefaultReadLimit.
	ReadLimit int64

	// RetryWait is the wait before a join or send that the server
	// answered with unavailable or internal (or rate_limited without a
	// delay) is written again. Default DefaultRetryWait.
	RetryWait time.Duration
	// RetryWindow is how long after its first write a send answered with
	// unavailable or internal is still written again (with its ref);
	// after it, Send returns the refusal. It must stay below the server's
	// idempotency window (10 minutes by default), within which a retry of
	// a send that was stored after all is acked, not stored again.
	// Default DefaultRetryWindow.
	RetryWindow time.Duration
	// PageLimit is the limit of the history requests that fill a join
	// reply marked "more"; 1–MaxHistory. Default MaxHistory.
	PageLimit int
	// MaxFill bounds the messages one join collects by paging back before
	// it delivers them (they are held in memory until the fill ends). A
	// resume that would need more delivers the newest MaxFill after an
	// EventGap. Default DefaultMaxFill.
	MaxFill int
	// SeenPerRoom is how many recent seqs each room remembers to drop
	// duplicates. Default DefaultSeenPerRoom.
	SeenPerRoom int
}

// Defaults of Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultEventBuffer      = 256
	DefaultMaxPending       = 100
	// DefaultMaxFrameBytes is the server's default --read-limit.
	DefaultMaxFrameBytes = 64 << 10
	DefaultMinBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultStableAfter   = 5 * time.Second
	// DefaultFrameRate and DefaultFrameBurst stay below the server's
	// defaults (20 and 40), leaving room for frames that travel bunched.
	DefaultFrameRate  = 18
	DefaultFrameBurst = 32
	DefaultWriteWait  = 10 * time.Second
	// DefaultPongWait is the server's default --pong-wait: the server pings
	// every 54 s, so a healthy connection is never silent that long.
	DefaultPongWait = 60 * time.Second
	// DefaultReadLimit leaves room for a resume of a whole room's history
	// in one joined frame, which servers without page budgets send.
	DefaultReadLimit = 32 << 20
	DefaultRetryWait = time.Second
	// DefaultRetryWindow is half the server's default idempotency window.
	DefaultRetryWindow = 5 * time.Minute
	DefaultMaxFill     = 10_000
	DefaultSeenPerRoom = 1000
)

// Protocol limits (docs/PROTOCOL.md §12).
const (
	// MaxHistory is the most messages a join's history or a history
	// request may ask for.
	MaxHistory = 500
	// MaxUserLen is the longest user name, in characters.
	MaxUserLen = 32
)

func (c *Config) setDefaults() {
	if c.Dialer == nil {
		c.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: DefaultHandshakeTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.StableAfter == 0 {
		c.StableAfter = DefaultStableAfter
	}
	if c.FrameRate == 0 {
		c.FrameRate = DefaultFrameRate
	}
	if c.FrameBurst == 0 {
		c.FrameBurst = DefaultFrameBurst
	}
	if c.WriteWait == 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.PongWait == 0 {
		c.PongWait = DefaultPongWait
	}
	if c.ReadLimit == 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.RetryWait == 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = DefaultRetryWindow
	}
	if c.PageLimit == 0 {
		c.PageLimit = MaxHistory
	}
	if c.MaxFill == 0 {
		c.MaxFill = DefaultMaxFill
	}
	if c.SeenPerRoom == 0 {
		c.SeenPerRoom = DefaultSeenPerRoom
	}
}

// ErrConfig reports a Config that cannot work; Validate's errors wrap it.
var ErrConfig = errors.New("client: bad config")

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	if _, err := endpoint(c.URL, c.User); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(c.User); n == 0 || n > MaxUserLen {
		return fmt.Errorf("%w: user must be 1–%d characters", ErrConfig, MaxUserLen)
	}
	if c.EventBuffer < 1 || c.MaxPending < 1 || c.MaxFrameBytes < 1 || c.FrameBurst < 1 || c.FrameRate <= 0 ||
		c.ReadLimit < 1 || c.MaxFill < 1 || c.SeenPerRoom < 1 {
		return fmt.Errorf("%w: sizes, counts and the frame rate must be positive", ErrConfig)
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("%w: backoff must satisfy 0 < MinBackoff <= MaxBackoff", ErrConfig)
	}
	if c.StableAfter <= 0 || c.WriteWait <= 0 || c.PongWait <= 0 || c.RetryWait <= 0 || c.RetryWindow <= 0 {
		return fmt.Errorf("%w: durations must be positive", ErrConfig)
	}
	if c.PageLimit < 1 || c.PageLimit > MaxHistory {
		return fmt.Errorf("%w: PageLimit must be 1–%d", ErrConfig, MaxHistory)
	}
	return nil
}

// endpoint returns the WebSocket URL of base for user.
func endpoint(base, user string) (string, error) {
	if base == "" {
		return "", fmt.Errorf("%w: URL is required", ErrConfig)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("%w: URL: %w", ErrConfig, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("%w: URL scheme %q is not http, https, ws or wss", ErrConfig, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: URL %q has no host", ErrConfig, base)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ws"
	}
	q := u.Query()
	q.Set("user", user)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
