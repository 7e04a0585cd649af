package redisstore

import (
	"context"

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
