package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// maxSeq is the largest seq: nothing can follow it.
var maxSeq = pipeline.Seq{MS: math.MaxUint64, N: math.MaxUint64}

// History reads a room stream and its epoch in one transaction: XREVRANGE
// for the last messages or those before a seq, XRANGE for those after a seq
// (one more than the page, to tell whether a next page exists, with XINFO
// to tell whether messages after it were trimmed). Seqs are parsed first,
// so a malformed one is ErrBadSeq and never reaches Redis; the seqs no range
// can follow or precede ("(" of the largest seq or of 0-0, which Redis
// refuses) give an empty page. Entries that cannot be decoded are logged and
// skipped.
func (b *Backend) History(ctx context.Context, room string, q pipeline.HistoryQuery) (pipeline.HistoryPage, error) {
	var page pipeline.HistoryPage
	var after, before pipeline.Seq
	var err error
	switch {
	case q.After != "":
		after, err = pipeline.ParseSeq(q.After)
	case q.Before != "":
		before, err = pipeline.ParseSeq(q.Before)
	}
	if err != nil {
		return page, fmt.Errorf("redisstore: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	key := b.keys.Room(room)
	limit := int64(q.Limit)
	pipe := b.client.TxPipeline()
	exists := pipe.Exists(ctx, key)
	epoch := pipe.Get(ctx, b.keys.Epoch(room))
	var rng *redis.XMessageSliceCmd
	var info *redis.XInfoStreamCmd
	reverse := false
	switch {
	case q.Limit <= 0: // the epoch alone
	case q.After != "":
		if after != maxSeq {
			rng = pipe.XRangeN(ctx, key, "("+after.String(), "+", limit+1)
			info = pipe.XInfoStream(ctx, key)
		}
	case q.Before != "":
		if before != (pipeline.Seq{}) {
			rng, reverse = pipe.XRevRangeN(ctx, key, "("+before.String(), "-", limit), true
		}
	default:
		rng, reverse = pipe.XRevRangeN(ctx, key, "+", "-", limit), true
	}
	// Each reply is checked on its own: a missing epoch (redis.Nil) or a
	// missing stream for XINFO is an answer, not a failure.
	_, _ = pipe.Exec(ctx)
	if err := exists.Err(); err != nil {
		return page, b.unavailable(err)
	}
	e, err := epoch.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return page, b.unavailable(err)
	}
	if exists.Val() == 0 {
		return page, nil // nothing stored: no epoch either
	}
	page.Epoch = e
	if rng == nil {
		return page, nil
	}
	entries, err := rng.Result()
	if err != nil {
		return page, b.unavailable(err)
	}
	if reverse {
		slices.Reverse(entries)
	}
	if info != nil {
		if i, ierr := info.Result(); ierr == nil {
			page.Truncated = trimmedAfter(after.String(), i)
		}
		if len(entries) > q.Limit {
			entries = entries[:q.Limit]
			page.Next = entries[q.Limit-1].ID
		}
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
