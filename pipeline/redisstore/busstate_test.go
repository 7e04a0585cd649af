package redisstore_test

import (
	"context"
	"testing"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestBusStateTrimmedAfterDelete: Redis keeps the newest entry deleted by
// XDEL (as the append script deletes the bus entry of a message it could
// not store) however much trimming removes after it. BusState reports it as
// Trimmed only while it is newer than the oldest entry kept; older, it
// would hide every later trim from a reader's gap check.
func TestBusStateTrimmedAfterDelete(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts, BusMaxLen: 10})
	ctx := context.Background()
	room := roomsOfOnePartition(1, parts)[0]
	p := pipeline.PartitionOf(room, parts)
	c := srv.Client()

	deleted := mustAppend(t, b, send(room, "", "deleted")).Seq
	if err := c.XDel(ctx, b.Keys().Bus(p), deleted).Err(); err != nil {
		t.Fatal(err)
	}
	mid := ""
	for i := range 300 {
		a := mustAppend(t, b, send(room, "", "traffic"))
		if i == 295 {
			mid = a.Seq
		}
	}
	st, err := b.BusState(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if pipeline.CompareSeq(st.Oldest, deleted) <= 0 {
		t.Fatalf("oldest %s; the test expected the bus trimmed past %s", st.Oldest, deleted)
	}
	if st.Trimmed != "" {
		t.Fatalf("Trimmed = %s (the entry deleted before trimming), want \"\" with Oldest %s", st.Trimmed, st.Oldest)
	}

	// A deletion among the kept entries is the newest removed.
	if err := c.XDel(ctx, b.Keys().Bus(p), mid).Err(); err != nil {
		t.Fatal(err)
	}
	if st, err := b.BusState(ctx, p); err != nil || st.Trimmed != mid {
		t.Fatalf("after deleting %s among the kept entries: Trimmed = %q, %v", mid, st.Trimmed, err)
	}
}
