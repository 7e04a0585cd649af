// Package replay reads chatstream's Redis streams for tools and operators:
// it decodes stored entries, selects a room's messages by time range, user
// and text, merges every room in seq order, follows new messages like
// `tail -f`, republishes messages through the pipeline (into another room,
// or dead letters back into their room), and reports the state of every
// stream. The `chatstream replay`, `rejected` and `streams` commands and the
// admin HTTP API are built on it; docs/STREAMS.md documents the entry layout
// it decodes.
//
// A Reader only reads. It never changes a stream; the Publisher writes
// through a pipeline.Pipeline like any instance.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// ErrUnknownRoom reports a room that has no history stream.
var ErrUnknownRoom = errors.New("unknown room")

// ErrBadRange reports a since/until bound or a range that cannot be used.
var ErrBadRange = errors.New("bad range")

// ErrNotFound reports a dead-letter ID that is not in the dead-letter stream.
var ErrNotFound = errors.New("no such entry")

// Config configures a Reader. A zero field takes the default in its comment.
type Config struct {
	// PageSize is the number of entries one XRANGE reads. Default 500.
	PageSize int
	// Block is how long one XREAD of a follow blocks; it bounds how long a
	// cancelled follow takes to return. Default 1s; it must stay below the
	// backend's Timeout plus go-redis's blocking allowance.
	Block time.Duration
	// Poll is the pause between polls of a follow on a Redis Cluster, where
	// one XREAD cannot block on streams of several slots. Default 250ms.
	Poll time.Duration
	// Timeout bounds one Redis round trip that does not block. Default 10s.
	Timeout time.Duration
	// Logger receives diagnostics (undecodable entries). Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.PageSize <= 0 {
		c.PageSize = 500
	}
	if c.Block <= 0 {
		c.Block = time.Second
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Reader reads the streams of one deployment (one key prefix and partition
// count). It is safe for concurrent use; it owns no goroutine and does not
// close the backend.
type Reader struct {
	b    *redisstore.Backend
	c    redis.UniversalClient
	keys redisstore.Keys
	cfg  Config
	log  *slog.Logger
}

// NewReader returns a Reader over b's Redis.
func NewReader(b *redisstore.Backend, cfg Config) *Reader {
	cfg.setDefaults()
	return &Reader{b: b, c: b.Client(), keys: b.Keys(), cfg: cfg, log: cfg.Logger}
}

// Keys returns the deployment's key names.
func (r *Reader) Keys() redisstore.Keys { return r.keys }

// CheckRoom returns ErrUnknownRoom when room has no history stream, and a
// pipeline.CodeInvalid error when room is not a valid room name.
func (r *Reader) CheckRoom(ctx context.Context, room string) error {
	if err := pipeline.ValidateRoom(room); err != nil {
		return fmt.Errorf("room %q: %w", room, err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	n, err := r.c.Exists(ctx, r.keys.Room(room)).Result()
	if err != nil {
		return wrap("exists", err)
	}
	if n == 0 {
		return fmt.Errorf("%w %q (no stream %s; check the Redis prefix and partition count)", ErrUnknownRoom, room, r.keys.Room(room))
	}
	return nil
}

// wrap adds op to a Redis error. An error that is neither a reply from
// Redis nor a cancellation (a refused connection, a timeout) also wraps
// pipeline.ErrUnavailable.
func wrap(op string, err error) error {
	var re redis.Error
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("replay: %s: %w", op, err)
	case errors.As(err, &re) && !errors.Is(err, redis.Nil):
		return fmt.Errorf("replay: %s: %w", op, err)
	}
	return fmt.Errorf("replay: %s: %w: %w", op, pipeline.ErrUnavailable, err)
}

// isNoSuchKey reports XINFO's error for a missing stream.
func isNoSuchKey(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && re.Error() == "ERR no such key"
}
