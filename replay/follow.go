package replay

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// follow calls fn for every entry added to keys after the IDs in from, in
// seq order within each XREAD reply, until ctx is done or fn fails. On one
// Redis it blocks in one XREAD on every key; on a Cluster, whose keys live in
// different slots, it polls them one by one.
func (r *Reader) follow(ctx context.Context, keys []string, from map[string]string, fn func(Entry) error) error {
	pos := make([]string, len(keys))
	for i, k := range keys {
		pos[i] = from[k]
	}
	_, cluster := r.c.(*redis.ClusterClient)
	for ctx.Err() == nil {
		var streams []redis.XStream
		var err error
		if cluster {
			streams, err = r.poll(ctx, keys, pos)
		} else {
			streams, err = r.c.XRead(ctx, &redis.XReadArgs{
				Streams: append(slices.Clone(keys), pos...),
				Count:   int64(r.cfg.PageSize),
				Block:   r.cfg.Block,
			}).Result()
			if errors.Is(err, redis.Nil) { // the block time passed without news
				err = nil
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return wrap("xread", err)
		}
		type item struct {
			key string
			seq pipeline.Seq
			x   redis.XMessage
		}
		var batch []item
		for _, s := range streams {
			i := slices.Index(keys, s.Stream)
			if i < 0 || len(s.Messages) == 0 {
				continue
			}
			pos[i] = s.Messages[len(s.Messages)-1].ID
			for _, x := range s.Messages {
				seq, _ := pipeline.ParseSeq(x.ID) // Redis only hands out well-formed IDs
				batch = append(batch, item{s.Stream, seq, x})
			}
		}
		slices.SortStableFunc(batch, func(a, b item) int {
			switch {
			case a.seq.Less(b.seq):
				return -1
			case b.seq.Less(a.seq):
				return 1
			}
			return 0
		})
		for _, it := range batch {
			e, err := Decode(it.x)
			if err != nil {
				r.log.Warn("skipping undecodable entry", "stream", it.key, "err", err)
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// poll reads the new entries of each key without blocking, and pauses for
// Config.Poll when there were none.
func (r *Reader) poll(ctx context.Context, keys, pos []string) ([]redis.XStream, error) {
	var out []redis.XStream
	for i, k := range keys {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		s, err := r.c.XRead(rctx, &redis.XReadArgs{Streams: []string{k, pos[i]}, Count: int64(r.cfg.PageSize), Block: -1}).Result()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		out = append(out, s...)
	}
	if len(out) == 0 {
		t := time.NewTimer(r.cfg.Poll)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return out, nil
}
