package redisstore

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

var _ pipeline.BusLagger = (*Backend)(nil)

// countAfter counts, inside Redis, the entries of KEYS[1] after ARGV[1] (an
// exclusive XRANGE start), at most ARGV[2]; only the count travels.
var countAfter = redis.NewScript(`return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])`)

// BusLags counts, for each partition p < len(after), the bus entries after
// after[p] ("" counts from the start), at most limit each, in one round
// trip. The work in Redis is bounded by limit per partition.
func (b *Backend) BusLags(ctx context.Context, after []string, limit int64) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	pipe := b.client.Pipeline()
	cmds := make([]*redis.Cmd, len(after))
	for p, seq := range after {
		start := "-"
		if seq != "" {
			start = "(" + seq
		}
		cmds[p] = countAfter.Eval(ctx, pipe, []string{b.keys.Bus(p)}, start, limit)
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, b.unavailable(err)
	}
	out := make([]int64, len(after))
	for p, c := range cmds {
		n, err := c.Int64()
		if err != nil {
			return nil, b.unavailable(err)
		}
		out[p] = n
	}
	return out, nil
}
