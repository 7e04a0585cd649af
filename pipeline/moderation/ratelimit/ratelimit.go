// Package ratelimit is the ratelimit moderator: it limits how fast each
// user (across every instance) and each connection may send, and answers a
// message over the limit with rate_limited and the time to wait.
//
// Configuration (kind "ratelimit"):
//
//	moderators:
//	  - kind: ratelimit
//	    per_user: {rate: 5, per: 10s, burst: 5}   # 5 messages per 10s, bursts of 5
//	    per_conn: {rate: 10, per: 10s}            # burst defaults to rate
//	    backend: auto      # auto (default): Redis when the server uses Redis; memory; redis
//	    max_keys: 100000   # users or connections remembered per in-memory limiter
//
// The per-user limit is kept in Redis (with github.com/go-redis/redis_rate,
// keys <prefix>:ratelimit:user:<user>) when the server runs with Redis, so
// it holds across instances; otherwise, and always in a dry run, in memory
// with golang.org/x/time/rate. Connections live on one instance, so the
// per-connection limit is always in memory.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// Kind is the configuration kind of the ratelimit moderator.
const Kind = "ratelimit"

func init() {
	moderation.Register(Kind, moderation.Configured(func(spec moderation.Spec, env moderation.Env, cfg Config) (*Limiter, error) {
		switch cfg.Backend {
		case "", BackendAuto, BackendRedis:
			if env.Redis == nil && cfg.Backend == BackendRedis && !env.DryRun {
				return nil, spec.Errorf("backend", "backend redis needs a server that runs with Redis (--redis)")
			}
			if !env.DryRun {
				cfg.Redis = env.Redis
			}
			cfg.Prefix = env.RedisPrefix
		}
		return New(cfg)
	}))
}

// Backends of the per-user limit.
const (
	// BackendAuto uses Redis when the server has one, memory otherwise.
	BackendAuto = "auto"
	// BackendMemory keeps the per-user limit in each instance's memory.
	BackendMemory = "memory"
	// BackendRedis requires Redis.
	BackendRedis = "redis"
)

// Limit is a token bucket: Rate messages per Per, in bursts of up to Burst.
type Limit struct {
	// Rate is the number of messages allowed per Per. Required (> 0).
	Rate int `yaml:"rate"`
	// Per is the period of Rate. Default 1s.
	Per time.Duration `yaml:"per"`
	// Burst is the most messages sent at once. Default Rate.
	Burst int `yaml:"burst"`
}

func (l *Limit) setDefaults() {
	if l.Per == 0 {
		l.Per = time.Second
	}
	if l.Burst == 0 {
		l.Burst = l.Rate
	}
}

func (l Limit) validate(name string) error {
	if l.Rate <= 0 || l.Per < 0 || l.Burst < 0 {
		return fmt.Errorf("%s: rate must be positive, per and burst not negative", name)
	}
	return nil
}

// String formats the limit as "5/10s burst 5".
func (l Limit) String() string { return fmt.Sprintf("%d/%s burst %d", l.Rate, l.Per, l.Burst) }

// DefaultReason starts the reason of a rate-limited message; the time to
// wait follows.
const DefaultReason = "you are sending messages too fast"

// DefaultMaxKeys is the default bound of the users or connections each
// in-memory limiter remembers, one token bucket each.
const DefaultMaxKeys = 100_000

// Config configures a Limiter. A zero field takes the default in its
// comment; at least one of PerUser and PerConn is required.
type Config struct {
	// PerUser limits each user.
	PerUser *Limit `yaml:"per_user"`
	// PerConn limits each connection.
	PerConn *Limit `yaml:"per_conn"`
	// Backend is where the per-user limit is kept: BackendAuto (default),
	// BackendMemory or BackendRedis.
	Backend string `yaml:"backend"`
	// MaxKeys bounds each in-memory limiter: beyond it the least recently
	// seen user or connection is forgotten (and starts afresh with a full
	// burst). Default DefaultMaxKeys.
	MaxKeys int `yaml:"max_keys"`
	// Reason starts the reason given to the sender. Default DefaultReason.
	Reason string `yaml:"reason"`
	// Redis, when set, keeps the per-user limit in Redis.
	Redis redis.UniversalClient `yaml:"-"`
	// Prefix starts the Redis keys. Default redisstore.DefaultPrefix.
	Prefix string `yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.PerUser != nil {
		c.PerUser.setDefaults()
	}
	if c.PerConn != nil {
		c.PerConn.setDefaults()
	}
	if c.Backend == "" {
		c.Backend = BackendAuto
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Reason == "" {
		c.Reason = DefaultReason
	}
	if c.Prefix == "" {
		c.Prefix = redisstore.DefaultPrefix
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	if c.PerUser == nil && c.PerConn == nil {
		return errors.New("give per_user, per_conn or both")
	}
	if c.PerUser != nil {
		if err := c.PerUser.validate("per_user"); err != nil {
			return err
		}
	}
	if c.PerConn != nil {
		if err := c.PerConn.validate("per_conn"); err != nil {
			return err
		}
	}
	switch c.Backend {
	case "", BackendAuto, BackendMemory, BackendRedis:
	default:
		return fmt.Errorf("backend is %q; want auto, memory or redis", c.Backend)
	}
	if c.MaxKeys < 0 {
		return errors.New("max_keys must not be negative")
	}
	return nil
}

// Limiter is the ratelimit moderator. It is safe for concurrent use.
type Limiter struct {
	cfg     Config
	user    *memLimiter // nil when the per-user limit is in Redis or absent
	conn    *memLimiter
	redis   *redis_rate.Limiter
	userKey string // Redis key prefix of the per-user limit
}

var _ moderation.Moderator = (*Limiter)(nil)

// New builds a limiter.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	cfg.setDefaults()
	l := &Limiter{cfg: cfg, userKey: cfg.Prefix + ":ratelimit:user:"}
	if cfg.PerUser != nil {
		if cfg.Redis != nil && cfg.Backend != BackendMemory {
			l.redis = redis_rate.NewLimiter(unprefixed{cfg.Redis})
		} else {
			var err error
			if l.user, err = newMemLimiter(*cfg.PerUser, cfg.MaxKeys); err != nil {
				return nil, fmt.Errorf("ratelimit: per_user: %w", err)
			}
		}
	}
	if cfg.PerConn != nil {
		var err error
		if l.conn, err = newMemLimiter(*cfg.PerConn, cfg.MaxKeys); err != nil {
			return nil, fmt.Errorf("ratelimit: per_conn: %w", err)
		}
	}
	return l, nil
}

// Describe summarises the limits and where they are kept.
func (l *Limiter) Describe() string {
	var parts []string
	if u := l.cfg.PerUser; u != nil {
		where := "in memory"
		switch {
		case l.redis != nil:
			where = "in Redis " + l.userKey + "*"
		case l.cfg.Backend != BackendMemory:
			where = "in memory; in Redis when the server runs with --redis"
		}
		parts = append(parts, fmt.Sprintf("per_user=%s (%s)", u, where))
	}
	if c := l.cfg.PerConn; c != nil {
		parts = append(parts, fmt.Sprintf("per_conn=%s (in memory)", c))
	}
	return strings.Join(parts, " ")
}

// Moderate lets m through when both its connection and its user are within
// their limits, and answers rate_limited otherwise. The connection's token
// is given back when the user's limit refuses.
func (l *Limiter) Moderate(ctx context.Context, m *moderation.Message) (moderation.Decision, error) {
	var connRes reservation
	if l.conn != nil && m.ConnID != "" {
		connRes = l.conn.reserve(m.ConnID, m.Time)
		if connRes.wait > 0 {
			return l.limited(connRes.wait), nil
		}
	}
	var wait time.Duration
	switch {
	case l.redis != nil:
		res, err := l.redis.Allow(ctx, l.userKey+m.User, redis_rate.Limit{
			Rate: l.cfg.PerUser.Rate, Period: l.cfg.PerUser.Per, Burst: l.cfg.PerUser.Burst,
		})
		if err != nil {
			connRes.cancel(m.Time)
			return moderation.Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
		}
		if res.Allowed == 0 {
			wait = max(res.RetryAfter, time.Millisecond)
		}
	case l.user != nil:
		wait = l.user.reserve(m.User, m.Time).wait
	}
	if wait > 0 {
		connRes.cancel(m.Time)
		return l.limited(wait), nil
	}
	return moderation.Accepted(), nil
}

func (l *Limiter) limited(wait time.Duration) moderation.Decision {
	wait = wait.Round(time.Millisecond)
	if wait <= 0 {
		wait = time.Millisecond
	}
	return moderation.RateLimited(fmt.Sprintf("%s; try again in %s", l.cfg.Reason, wait), wait)
}

// unprefixed adapts a client for redis_rate, which puts "rate:" before
// every key, so that the keys stay under the deployment's prefix.
type unprefixed struct{ c redis.UniversalClient }

const redisRatePrefix = "rate:"

func trimKeys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, redisRatePrefix)
	}
	return out
}

// Eval forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.c.Eval(ctx, script, trimKeys(keys), args...)
}

// EvalSha forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.c.EvalSha(ctx, sha1, trimKeys(keys), args...)
}

// EvalRO forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.c.EvalRO(ctx, script, trimKeys(keys), args...)
}

// EvalShaRO forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.c.EvalShaRO(ctx, sha1, trimKeys(keys), args...)
}

// ScriptExists forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return u.c.ScriptExists(ctx, hashes...)
}

// ScriptLoad forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return u.c.ScriptLoad(ctx, script)
}

// Del forwards to the client with the "rate:" prefix removed from keys.
func (u unprefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return u.c.Del(ctx, trimKeys(keys)...)
}
