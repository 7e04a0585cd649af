package redisstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// InstanceTTL is how long an instance's record outlives its last refresh.
const InstanceTTL = 30 * time.Second

// InstanceKey returns the hash where a running instance records how far it
// has read each partition bus: fields p00.. (last delivered bus ID), addr,
// started_at and updated_at (RFC 3339). It expires InstanceTTL after the
// last refresh, so only running instances are listed.
func (k Keys) InstanceKey(id string) string { return k.Prefix + ":instance:" + id }

// InstanceInfo describes one running instance (pipeline.InstanceInfo).
type InstanceInfo = pipeline.InstanceInfo

var (
	_ pipeline.InstanceRecorder = (*Backend)(nil)
	_ pipeline.BusStater        = (*Backend)(nil)
)

// RecordInstance writes info under Keys.InstanceKey with a TTL.
func (b *Backend) RecordInstance(ctx context.Context, info InstanceInfo) error {
	key := b.keys.InstanceKey(info.ID)
	fields := []any{
		"addr", info.Addr,
		"version", info.Version,
		"started_at", info.StartedAt.UTC().Format(time.RFC3339),
		"updated_at", time.Now().UTC().Format(time.RFC3339),
	}
	for p, pos := range info.Positions {
		fields = append(fields, fmt.Sprintf("p%02d", p), pos)
	}
	pipe := b.client.TxPipeline()
	pipe.HSet(ctx, key, fields...)
	pipe.Expire(ctx, key, InstanceTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return b.unavailable(err)
	}
	return nil
}

// Instances returns the records of the running instances.
func (b *Backend) Instances(ctx context.Context) ([]InstanceInfo, error) {
	prefix := b.keys.InstanceKey("")
	// mu guards keys: a Cluster's masters are scanned concurrently.
	var mu sync.Mutex
	var keys []string
	err := forEachMaster(ctx, b.client, func(ctx context.Context, c scanner) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		return nil, b.unavailable(err)
	}
	out := make([]InstanceInfo, 0, len(keys))
	for _, key := range keys {
		h, err := b.client.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, b.unavailable(err)
		}
		if len(h) == 0 {
			continue // expired between SCAN and HGETALL
		}
		info := InstanceInfo{ID: strings.TrimPrefix(key, prefix), Addr: h["addr"], Version: h["version"], Positions: make([]string, b.cfg.Partitions)}
		info.StartedAt, _ = time.Parse(time.RFC3339, h["started_at"]) // zero when missing
		for p := range info.Positions {
			info.Positions[p] = h[fmt.Sprintf("p%02d", p)]
		}
		out = append(out, info)
	}
	return out, nil
}
