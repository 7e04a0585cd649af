package redisstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// History reads a room stream: XREVRANGE for the last messages or those
// before a seq, XRANGE for those after a seq (with XINFO in the same round
// trip to tell whether messages after it were trimmed). Entries that cannot
// be decoded are logged and skipped.
func (b *Backend) History(ctx context.Context, room string, q pipeline.HistoryQuery) (pipeline.HistoryPage, error) {
	var page pipeline.HistoryPage
	if q.Limit <= 0 {
		return page, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	key := b.keys.Room(room)
	limit := int64(q.Limit)
	var entries []redis.XMessage
	switch {
	case q.After != "":
		pipe := b.client.Pipeline()
		rng := pipe.XRangeN(ctx, key, "("+q.After, "+", limit)
		info := pipe.XInfoStream(ctx, key)
		_, err := pipe.Exec(ctx)
		if err != nil && !isNoSuchKey(err) {
			return page, b.unavailable(err)
		}
		entries = rng.Val()
		if i, ierr := info.Result(); ierr == nil {
			page.Truncated = trimmedAfter(q.After, i)
		}
		if len(entries) == q.Limit {
			page.Next = entries[len(entries)-1].ID
		}
	case q.Before != "":
		xs, err := b.client.XRevRangeN(ctx, key, "("+q.Before, "-", limit).Result()
		if err != nil {
			return page, b.unavailable(err)
		}
		slices.Reverse(xs)
		entries = xs
	default:
		xs, err := b.client.XRevRangeN(ctx, key, "+", "-", limit).Result()
		if err != nil {
			return page, b.unavailable(err)
		}
		slices.Reverse(xs)
		entries = xs
	}
	page.Messages = make([]pipeline.Message, 0, len(entries))
	for _, x := range entries {
		m, err := decodeEntry(x)
		if err != nil {
			b.log.Warn("skipping undecodable entry", "stream", key, "err", err)
			continue
		}
		page.Messages = append(page.Messages, m)
	}
	return page, nil
}

// trimmedAfter reports whether entries after seq after may have been
// trimmed: after is older than the oldest entry kept and the stream has
// lost entries. (Redis 7 does not record trimmed IDs, so a since that is
// exactly the newest trimmed entry is reported as truncated too.)
func trimmedAfter(after string, info *redis.XInfoStream) bool {
	if info.EntriesAdded <= info.Length || info.FirstEntry.ID == "" {
		return false
	}
	return pipeline.CompareSeq(after, info.FirstEntry.ID) < 0
}

func (b *Backend) unavailable(err error) error {
	return fmt.Errorf("redisstore: %w: %w", pipeline.ErrUnavailable, err)
}
