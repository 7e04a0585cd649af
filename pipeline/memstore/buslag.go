package memstore

import (
	"context"
	"fmt"
	"sort"

	"github.com/chatstream/chatstream/pipeline"
)

var _ pipeline.BusLagger = (*Backend)(nil)

// BusLags counts the messages of the feed's recent log after after[0] (the
// one partition), at most limit.
func (b *Backend) BusLags(ctx context.Context, after []string, limit int64) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]int64, len(after))
	if len(after) == 0 {
		return out, nil
	}
	var from pipeline.Seq
	if after[0] != "" {
		s, err := pipeline.ParseSeq(after[0])
		if err != nil {
			return nil, fmt.Errorf("memstore: %w", err)
		}
		from = s
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// recent is in seq order: the first message after from starts the lag.
	i := sort.Search(len(b.recent), func(i int) bool {
		s, _ := pipeline.ParseSeq(b.recent[i].Metadata.Get(pipeline.MetaSeq))
		return from.Less(s)
	})
	out[0] = min(int64(len(b.recent)-i), limit)
	return out, nil
}
