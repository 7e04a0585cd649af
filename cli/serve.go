package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// serveCmd runs a gateway.
type serveCmd struct {
	Addr              string        `default:"${default_addr}" env:"CHATSTREAM_ADDR" help:"Listen address."`
	Redis             string        `env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis backend: redis://host:port/db, host:port,host:port,... for a Cluster, or redis-sentinel://host:port,host:port,.../master for the primary Sentinels name. Empty: the embedded in-memory backend (one instance)."`
	RedisPrefix       string        `default:"${default_redis_prefix}" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of every Redis key, so deployments can share a Redis."`
	Partitions        int           `default:"${default_partitions}" env:"CHATSTREAM_PARTITIONS" help:"Partition bus streams rooms are spread over (same on every instance)."`
	BusMaxlen         int64         `default:"${default_bus_maxlen}" env:"CHATSTREAM_BUS_MAXLEN" help:"Entries kept per partition bus stream (approximately)."`
	AllowedOrigins    []string      `env:"CHATSTREAM_ALLOWED_ORIGINS" sep:"," help:"Cross-origin Origins allowed to connect (scheme://host[:port], comma separated; * allows all). Same-host and Origin-less requests are always allowed."`
	RoomMaxlen        int           `default:"${default_room_maxlen}" env:"CHATSTREAM_ROOM_MAXLEN" help:"Messages kept per room (approximately, in Redis)."`
	MaxText           int           `default:"${default_max_text}" env:"CHATSTREAM_MAX_TEXT" help:"Largest message text, in bytes."`
	ReadLimit         int64         `default:"${default_read_limit}" env:"CHATSTREAM_READ_LIMIT" help:"Largest client frame, in bytes; larger frames close the socket with 1009."`
	MaxRooms          int           `default:"${default_max_rooms}" env:"CHATSTREAM_MAX_ROOMS" help:"Rooms one connection may join."`
	SendQueueBytes    int           `default:"${default_send_queue_bytes}" env:"CHATSTREAM_SEND_QUEUE_BYTES" help:"Bytes of frames queued per connection before a slow client is dropped (1008)."`
	MaxPageBytes      int           `default:"${default_max_page_bytes}" env:"CHATSTREAM_MAX_PAGE_BYTES" help:"Largest joined or history reply, in bytes of messages; a longer range says more:true and is fetched in pages."`
	HistoryRateBytes  float64       `default:"${default_history_rate_bytes}" env:"CHATSTREAM_HISTORY_RATE_BYTES" help:"Bytes of history (joined and history replies) one connection may be sent per second, sustained; a join or history frame beyond it is answered rate_limited."`
	HistoryBurstBytes int           `default:"${default_history_burst_bytes}" env:"CHATSTREAM_HISTORY_BURST_BYTES" help:"Bytes of history one connection may be sent in a burst (at least --max-page-bytes)."`
	SendQueue         int           `default:"${default_send_queue}" env:"CHATSTREAM_SEND_QUEUE" help:"Frames queued per connection before a slow client is dropped (1008)."`
	SendWindow        int           `default:"${default_send_window}" env:"CHATSTREAM_SEND_WINDOW" help:"Sends of one connection that may wait for the store at once; the connection is read meanwhile, and beyond them it waits for an answer before reading on."`
	SendWindowBytes   int           `default:"${default_send_window_bytes}" env:"CHATSTREAM_SEND_WINDOW_BYTES" help:"Bytes of text those sends may hold at once (one send of any size may always wait); beyond it the connection waits for an answer before reading on."`
	FrameRate         float64       `default:"${default_frame_rate}" env:"CHATSTREAM_FRAME_RATE" help:"Frames per second one connection may send (sustained)."`
	FrameBurst        int           `default:"${default_frame_burst}" env:"CHATSTREAM_FRAME_BURST" help:"Frames one connection may send in a burst."`
	PongWait          time.Duration `default:"${default_pong_wait}" env:"CHATSTREAM_PONG_WAIT" help:"How long a silent connection is kept; pings go out at 9/10 of it."`
	WriteWait         time.Duration `default:"${default_write_wait}" env:"CHATSTREAM_WRITE_WAIT" help:"Longest a socket write may take; a longer one drops the connection."`
	MaxConns          int           `default:"0" env:"CHATSTREAM_MAX_CONNS" help:"WebSockets this instance holds at once; more are refused with 503. 0: the open-file limit minus max(100, limit/10), leaving room for health checks and Redis (${derived_max_conns} here)."`
	MaxConnsPerIP     int           `default:"${default_max_conns_per_ip}" env:"CHATSTREAM_MAX_CONNS_PER_IP" help:"WebSockets one client address holds at once (an IPv6 /64 counts as one address); more are refused with 429."`
	HandshakeRate     float64       `default:"${default_handshake_rate}" env:"CHATSTREAM_HANDSHAKE_RATE" help:"WebSocket handshakes per second one client address may make (sustained); more are refused with 429."`
	HandshakeBurst    int           `default:"${default_handshake_burst}" env:"CHATSTREAM_HANDSHAKE_BURST" help:"WebSocket handshakes one client address may make at once."`
	TrustedProxies    []string      `env:"CHATSTREAM_TRUSTED_PROXIES" sep:"," placeholder:"CIDR" help:"Proxies (CIDRs or addresses, comma separated) whose X-Forwarded-For names the client; the right-most address that is not a trusted proxy is the client. Empty: the header is ignored."`
	ShutdownTimeout   time.Duration `default:"${default_shutdown_timeout}" env:"CHATSTREAM_SHUTDOWN_TIMEOUT" help:"How long a graceful shutdown may take."`
	ShedLatency       time.Duration `default:"0s" env:"CHATSTREAM_SHED_LATENCY" help:"Go scheduler latency (90th percentile per 100 ms) above which a growing share of new sends is refused at once with unavailable and a retry hint, e.g. 100ms; 0 (the default) never sheds."`
	AdminToken        string        `env:"CHATSTREAM_ADMIN_TOKEN" placeholder:"TOKEN" help:"Bearer token of the admin HTTP API under /api/ (docs/ADMIN.md; Redis backend only). Empty: the API is off."`
	AdminTokenFile    string        `env:"CHATSTREAM_ADMIN_TOKEN_FILE" placeholder:"FILE" help:"File holding the admin API's bearer token, instead of --admin-token (keeps it out of the process list and the environment)."`
	RoomTTL           time.Duration `default:"${default_room_ttl}" env:"CHATSTREAM_ROOM_TTL" help:"How long a room's history outlives its last message; 0 keeps rooms forever."`
	IdempotencyWindow time.Duration `default:"${default_idempotency_window}" env:"CHATSTREAM_IDEMPOTENCY_WINDOW" help:"How long a send's ref is remembered: a resend with the same ref within it is acked with the message stored the first time."`
	MemoryMaxRooms    int           `default:"${default_memory_max_rooms}" env:"CHATSTREAM_MEMORY_MAX_ROOMS" help:"Rooms the in-memory backend keeps; a new room beyond it evicts the one idle longest (without --redis only)."`
	MemoryMaxBytes    int64         `default:"${default_memory_max_bytes}" env:"CHATSTREAM_MEMORY_MAX_BYTES" help:"Bytes of messages the in-memory backend keeps (each counts its text and metadata plus 304 bytes, about 400 bytes plus its text); beyond it the room appended to least recently drops just enough of its oldest messages, or is evicted if it would drop them all, and a room alone over it keeps at least its newest (without --redis only)."`
	Moderation        string        `env:"CHATSTREAM_MODERATION" placeholder:"FILE" help:"Moderation config file (YAML or JSON; docs/PLUGINS.md). The server refuses to start when it is invalid; SIGHUP reloads its rules and word files."`
	Ops               serveOpsFlags `embed:""`
	Web               serveWebFlags `embed:""`

	// Authentication and room permissions (cli/serve_auth.go).
	AuthFlags serveAuthFlags `embed:""`

	// Replica-acknowledged writes and pushed delivery (cli/serve_redis.go).
	RedisWait serveRedisFlags `embed:""`
}

// Run starts the gateway and blocks until SIGINT or SIGTERM. SIGHUP
// reloads the moderation and rooms policy files, and never ends it.
func (s *serveCmd) Run(g *globals) error {
	defer holdHangup(g.Ctx, g.Log)()
	if err := s.AuthFlags.config(g.Log).Check(); err != nil {
		return usageError(err)
	}
	token, err := adminToken(s.AdminToken, s.AdminTokenFile)
	if err != nil {
		return usageError(err)
	}
	s.AdminToken = token
	// A negative duration would pass for "forever" (room TTL) or the
	// default (the window) below; the other limits are checked by
	// server.Config.
	switch {
	case s.RoomTTL < 0:
		return usageError(fmt.Errorf("--room-ttl (CHATSTREAM_ROOM_TTL) is %v: want a duration, or 0 to keep rooms forever", s.RoomTTL))
	case s.IdempotencyWindow < 0:
		return usageError(fmt.Errorf("--idempotency-window (CHATSTREAM_IDEMPOTENCY_WINDOW) is %v: want a duration, or 0 for the default", s.IdempotencyWindow))
	}
	b, err := backend.Open(backend.Config{
		RedisURL: s.Redis, RedisPrefix: s.RedisPrefix, Partitions: s.Partitions,
		RoomMaxLen: s.RoomMaxlen, BusMaxLen: s.BusMaxlen, RoomTTL: roomTTL(s.RoomTTL),
		IdempotencyWindow: s.IdempotencyWindow, MaxRooms: s.MemoryMaxRooms, MaxBytes: s.MemoryMaxBytes, Logger: g.Log,
		RedisWaitReplicas: s.RedisWait.RedisWaitReplicas, RedisWaitTimeout: s.RedisWait.RedisWaitTimeout,
		RedisPollBus: !s.RedisWait.RedisBusPush,
	})
	if err != nil {
		return usageError(err)
	}
	cfg := s.config(g)
	cfg.Backend = b
	if s.Moderation != "" {
		chain, stop, err := serveModeration(g.Ctx, s.Moderation, b.ModerationEnv(g.Log))
		if err != nil {
			_ = b.Close() // the server never started
			return err
		}
		defer stop()
		cfg.Moderators, cfg.Ops.Moderation = chain.Moderators(), chain
	}
	srv, err := server.New(cfg)
	if err != nil {
		_ = b.Close() // the server never started
		return err
	}
	if file := s.AuthFlags.RoomsPolicy; file != "" {
		defer reloadOnHangup(g.Ctx, g.Log, "rooms policy", file, srv.ReloadRoomsPolicy)()
	}
	return srv.Run(g.Ctx)
}

func (s *serveCmd) config(g *globals) server.Config {
	return server.Config{
		Addr:            s.Addr,
		RoomMaxLen:      s.RoomMaxlen,
		MaxTextBytes:    s.MaxText,
		ShutdownTimeout: s.ShutdownTimeout,
		ShedLatency:     s.ShedLatency,
		AdminToken:      s.AdminToken,
		Ops:             s.opsConfig(),
		Auth:            s.AuthFlags.config(g.Log),
		Page:            s.Web.page(),
		Logger:          g.Log,
		WS: ws.Config{
			AllowedOrigins:   s.AllowedOrigins,
			ReadLimit:        s.ReadLimit,
			SendQueue:        s.SendQueue,
			MaxInFlightSends: s.SendWindow,
			MaxInFlightBytes: s.SendWindowBytes,
			SendQueueBytes:   s.SendQueueBytes,
			MaxPageBytes:     s.MaxPageBytes,
			HistoryRate:      s.HistoryRateBytes,
			HistoryBurst:     s.HistoryBurstBytes,
			MaxRooms:         s.MaxRooms,
			FrameRate:        s.FrameRate,
			FrameBurst:       s.FrameBurst,
			PongWait:         s.PongWait,
			WriteWait:        s.WriteWait,
			Logger:           g.Log,
		},
		Admission: admission.Config{
			MaxConns:       s.MaxConns,
			MaxConnsPerIP:  s.MaxConnsPerIP,
			HandshakeRate:  s.HandshakeRate,
			HandshakeBurst: s.HandshakeBurst,
			TrustedProxies: s.TrustedProxies,
			Logger:         g.Log,
		},
	}
}

// roomTTL maps the flag's 0 ("keep rooms forever") to the backend's
// pipeline.NoRoomTTL; the backend's zero means its default.
func roomTTL(flag time.Duration) time.Duration {
	if flag == 0 {
		return pipeline.NoRoomTTL
	}
	return flag
}

// adminToken is the admin API's token: token as given, or read from file
// (surrounding white space removed). Both at once, or a file that cannot
// be read or holds nothing, is an error.
func adminToken(token, file string) (string, error) {
	if file == "" {
		return token, nil
	}
	if token != "" {
		return "", errors.New("--admin-token and --admin-token-file (CHATSTREAM_ADMIN_TOKEN, CHATSTREAM_ADMIN_TOKEN_FILE) are both set: give one")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	switch {
	case t == "":
		return "", fmt.Errorf("--admin-token-file: %s holds no token", file)
	case strings.ContainsAny(t, "\r\n"):
		return "", fmt.Errorf("--admin-token-file: %s holds more than one line; the token is one line", file)
	}
	return t, nil
}
