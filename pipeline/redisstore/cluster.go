package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// scanner is the part of a client that SCAN needs.
type scanner interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
}

// forEachMaster runs fn on every master of a Cluster client, or on the
// client itself otherwise.
func forEachMaster(ctx context.Context, c redis.UniversalClient, fn func(context.Context, scanner) error) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, c)
}

// followTopology makes a Cluster client reload its slot map whenever a
// command or pipeline fails, so that after a failover it finds the
// promoted replica at once instead of at go-redis's periodic reload (every
// 60 s): go-redis follows MOVED replies, but a dead primary answers
// nothing, and its connection errors alone do not reload the map. Reloads
// are lazy and coalesced by go-redis (at most one at a time, 200 ms
// apart). Other clients are left alone.
func followTopology(c redis.UniversalClient) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		cc.AddHook(reloadOnError{cc})
	}
}

// reloadOnError is the hook of followTopology.
type reloadOnError struct{ cc *redis.ClusterClient }

var _ redis.Hook = reloadOnError{}

// DialHook passes dials through.
func (reloadOnError) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook reloads the slot map after a failed command.
func (h reloadOnError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.reloadAfter(ctx, err)
		return err
	}
}

// ProcessPipelineHook reloads the slot map after a failed pipeline.
func (h reloadOnError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.reloadAfter(ctx, err)
		return err
	}
}

func (h reloadOnError) reloadAfter(ctx context.Context, err error) {
	if err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, context.Canceled) {
		h.cc.ReloadState(ctx)
	}
}

// WritableEveryPartition reports whether every partition takes writes: it
// writes a short-lived probe key in each partition's slot, pipelined, so
// that on a Cluster any primary that is down (or refusing writes) fails
// it, not only the one that would hold a single probe key. An instance's
// readiness uses it.
func (b *Backend) WritableEveryPartition(ctx context.Context) error {
	pipe := b.client.Pipeline()
	for p := range b.cfg.Partitions {
		pipe.Set(ctx, fmt.Sprintf("%s:{p%02d}:health", b.keys.Prefix, p), "ok", 10*time.Second)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return b.healthErr(err)
	}
	return nil
}
