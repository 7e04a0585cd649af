// Package backend is chatstream's composition root for storage: it picks the
// backend once (the embedded memory backend, or Redis Streams) and yields
// every part that depends on that choice — store, feed, history, dead
// letters, presence, instance records, feed inspection, the stream reader
// of the tools and the admin API, and the moderators' shared state — as one
// value made of small interfaces. Nothing outside this package asks which
// backend is in use.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// Config selects and configures a backend. A zero field takes the default
// in its comment.
type Config struct {
	// RedisURL selects Redis Streams: redis://[user:pass@]host:port/db,
	// host:port,host:port,... for a Redis Cluster, or
	// redis-sentinel://host:port,.../master[/db] (redisstore.SentinelScheme).
	// Empty: the embedded memory backend (one instance, nothing kept across
	// restarts).
	RedisURL string
	// RedisPrefix starts every Redis key. Default redisstore.DefaultPrefix.
	RedisPrefix string
	// Partitions is the number of Redis bus streams. Default
	// redisstore.DefaultPartitions.
	Partitions int
	// RoomMaxLen is the number of messages kept per room. Default
	// pipeline.DefaultRoomMaxLen.
	RoomMaxLen int
	// BusMaxLen is the approximate length of each Redis bus stream.
	// Default redisstore.DefaultBusMaxLen.
	BusMaxLen int64
	// RoomTTL is how long a room's history and epoch outlive its last
	// message; an idle room is forgotten and its next message starts a new
	// epoch. Default pipeline.DefaultRoomTTL; negative (pipeline.NoRoomTTL):
	// rooms never expire.
	RoomTTL time.Duration
	// IdempotencyWindow is how long a send's (user, room, ref) is
	// remembered, so that a retry is acked with the message stored the
	// first time. Default pipeline.DefaultIdempotencyWindow; negative is
	// refused.
	IdempotencyWindow time.Duration
	// MaxRooms caps the rooms the memory backend keeps; a new room beyond
	// it evicts the one idle longest. Default memstore.DefaultMaxRooms.
	// Ignored with Redis, where idle rooms expire after RoomTTL.
	MaxRooms int
	// MaxBytes caps the approximate bytes of the messages the memory
	// backend keeps: beyond it the rooms appended to least recently drop
	// their oldest messages (memstore.Config.MaxBytes says exactly how).
	// Default memstore.DefaultMaxBytes; negative is refused. Ignored with
	// Redis.
	MaxBytes int64
	// Timeout bounds one Redis round trip. Default redisstore.DefaultTimeout.
	Timeout time.Duration
	// RedisWaitReplicas is how many Redis replicas must confirm each batch
	// of appends before its senders are acked (redisstore.Config.
	// WaitReplicas). Default 0: no wait.
	RedisWaitReplicas int
	// RedisWaitTimeout bounds that wait. Default
	// redisstore.DefaultWaitTimeout.
	RedisWaitTimeout time.Duration
	// RedisPollBus makes the Redis backend's partition subscriptions block
	// reading the buses instead of listening for pushes
	// (redisstore.Config.PollBus). Default false: pushed. Ignored without
	// Redis.
	RedisPollBus bool
	// PresenceTTL is how long an instance's presence outlives its last
	// sync. Default pipeline.DefaultPresenceTTL.
	PresenceTTL time.Duration
	// Logger receives the backend's diagnostics. Default slog.Default().
	Logger *slog.Logger
}

// Backend is every part of chatstream that depends on the storage. Its
// fields are set by Open, Memory or Redis; Streams and SharedState are nil
// without Redis. It is safe for concurrent use.
type Backend struct {
	// Store stores accepted messages.
	Store pipeline.Store
	// Feed delivers stored messages to every instance.
	Feed pipeline.Feed
	// History reads a room's stored messages.
	History pipeline.History
	// DeadLetters records rejected messages.
	DeadLetters pipeline.DeadLetters
	// Instances records running instances and their read positions.
	Instances pipeline.InstanceRecorder
	// Buses tells how much of each partition's feed is still kept.
	Buses pipeline.BusStater
	// Health reports whether the backend can serve: reads and writes.
	Health pipeline.Pinger
	// Streams reads stored streams for the tools (replay, rejected,
	// streams, the moderation dry run) and the admin API. Nil without
	// Redis.
	Streams *replay.Reader
	// SharedState is where moderators share state across instances, under
	// RedisPrefix. Nil without Redis.
	SharedState redis.UniversalClient
	// RedisPrefix starts every Redis key of the deployment.
	RedisPrefix string
	// Kind names the backend in logs: "memory" or "redis".
	Kind string

	presence    func(instanceID string, ttl time.Duration) pipeline.Presence
	presenceTTL time.Duration
	closer      io.Closer
}

// ErrNoRedis reports a tool that needs Redis used with the memory backend.
var ErrNoRedis = errors.New("backend: this needs the Redis backend (--redis)")

// ErrWaitNeedsRedis reports replica-acknowledged writes asked of the
// memory backend, which has no replicas.
var ErrWaitNeedsRedis = errors.New("backend: waiting for replicas (--redis-wait-replicas) needs the Redis backend (--redis)")

// Open builds the backend cfg selects. It does not fail when Redis is down:
// Redis is connected lazily and Health reports it.
func Open(cfg Config) (*Backend, error) {
	if cfg.RedisURL == "" && cfg.RedisWaitReplicas != 0 {
		return nil, ErrWaitNeedsRedis
	}
	if cfg.RedisURL == "" {
		m, err := memstore.New(memstore.Config{
			RoomMaxLen: cfg.RoomMaxLen, MaxRooms: cfg.MaxRooms, MaxBytes: cfg.MaxBytes, RoomTTL: cfg.RoomTTL,
			IdempotencyWindow: cfg.IdempotencyWindow, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
		b := Memory(m)
		b.presenceTTL = cfg.PresenceTTL
		return b, nil
	}
	r, err := redisstore.New(redisstore.Config{
		URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Partitions: cfg.Partitions,
		RoomMaxLen: int64(cfg.RoomMaxLen), BusMaxLen: cfg.BusMaxLen, Timeout: cfg.Timeout, Logger: cfg.Logger,
		RoomTTL: cfg.RoomTTL, IdempotencyWindow: cfg.IdempotencyWindow,
		WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout,
		PollBus: cfg.RedisPollBus,
	})
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	b := Redis(r, cfg.Logger)
	b.presenceTTL = cfg.PresenceTTL
	return b, nil
}

// Memory returns the parts of a memory backend; closing the Backend closes m.
func Memory(m *memstore.Backend) *Backend {
	return &Backend{
		Store: m, Feed: m, History: m, DeadLetters: m, Instances: m, Buses: m, Health: m,
		RedisPrefix: redisstore.DefaultPrefix, Kind: "memory",
		presence: func(id string, ttl time.Duration) pipeline.Presence { return m.NewPresence(id, ttl) },
		closer:   m,
	}
}

// Redis returns the parts of a Redis backend; closing the Backend closes r.
// log receives the stream reader's diagnostics (nil: slog.Default()).
func Redis(r *redisstore.Backend, log *slog.Logger) *Backend {
	return &Backend{
		Store: r, Feed: r, History: r, DeadLetters: r, Instances: r, Buses: r, Health: writable{r},
		Streams:     replay.NewReader(r, replay.Config{Logger: log}),
		SharedState: r.Client(),
		RedisPrefix: r.Keys().Prefix, Kind: "redis",
		presence: func(id string, ttl time.Duration) pipeline.Presence { return r.NewPresence(id, ttl) },
		closer:   r,
	}
}

// NewPresence returns the presence view of the instance named instanceID.
func (b *Backend) NewPresence(instanceID string) pipeline.Presence {
	return b.presence(instanceID, b.presenceTTL)
}

// ModerationEnv returns the environment moderators are built in: the
// deployment's shared state, when there is one, and log.
func (b *Backend) ModerationEnv(log *slog.Logger) moderation.Env {
	return moderation.Env{Logger: log, Redis: b.SharedState, RedisPrefix: b.RedisPrefix}
}

// Close releases the backend's connections and background work.
func (b *Backend) Close() error {
	if err := b.closer.Close(); err != nil {
		return fmt.Errorf("backend: close: %w", err)
	}
	return nil
}

// writable is the Redis backend's readiness: it must take writes, not only
// answer, in every partition (on a Cluster, on every primary that serves
// one).
type writable struct{ r *redisstore.Backend }

func (w writable) Ping(ctx context.Context) error { return w.r.WritableEveryPartition(ctx) }
