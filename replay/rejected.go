package replay

import (
	"context"
	"fmt"

	"github.com/chatstream/chatstream/pipeline"
)

// Rejected calls emit for every dead letter in rng that f selects, oldest
// first. The end is fixed when Rejected starts, so dead letters added while
// it runs (a requeued message rejected again) are not read.
func (r *Reader) Rejected(ctx context.Context, rng Range, f Filter, emit func(Entry) error) error {
	key := r.keys.Rejected()
	last, err := r.lastIDs(ctx, []string{key})
	if err != nil {
		return err
	}
	c := &cursor{key: key, next: rng.start(), end: capEnd(rng.end(), last[key])}
	return r.merge(ctx, []*cursor{c}, nil, nil, func(e Entry) error {
		if !f.Match(e) {
			return nil
		}
		return emit(e)
	})
}

// DeadLetters returns the dead letters with the given IDs, in the order
// given. It fails with ErrNotFound when one is missing and with ErrBadRange
// when one is not an entry ID.
func (r *Reader) DeadLetters(ctx context.Context, ids []string) ([]Entry, error) {
	for _, id := range ids {
		if _, err := pipeline.ParseSeq(id); err != nil {
			return nil, fmt.Errorf("%w: dead-letter ID %w", ErrBadRange, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out := make([]Entry, 0, len(ids))
	for _, id := range ids {
		xs, err := r.c.XRange(ctx, r.keys.Rejected(), id, id).Result()
		if err != nil {
			return nil, wrap("xrange", err)
		}
		if len(xs) == 0 {
			return nil, fmt.Errorf("dead letter %s: %w in %s", id, ErrNotFound, r.keys.Rejected())
		}
		e, err := Decode(xs[0])
		if err != nil {
			return nil, fmt.Errorf("dead letter %s: %w", id, err)
		}
		out = append(out, e)
	}
	return out, nil
}
