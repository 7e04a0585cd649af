package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// roomsOfOnePartition returns n room names of one partition of parts.
func roomsOfOnePartition(n, parts int) []string {
	var rooms []string
	for i := 0; len(rooms) < n; i++ {
		if room := fmt.Sprint("room-", i); pipeline.PartitionOf(room, parts) == 0 {
			rooms = append(rooms, room)
		}
	}
	return rooms
}

// asyncResult is one AppendAsync answer.
type asyncResult struct {
	a   pipeline.Appended
	err error
}

// appendAll queues msgs with AppendAsync while Redis is paused, so that
// they reach Redis together, then resumes it and returns each one's result.
func appendAll(t *testing.T, srv *testredis.Server, b *redisstore.Backend, msgs []*message.Message) []asyncResult {
	t.Helper()
	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	results := make([]chan asyncResult, len(msgs))
	for i, m := range msgs {
		results[i] = make(chan asyncResult, 1)
		if err := b.AppendAsync(m, func(a pipeline.Appended, err error) { results[i] <- asyncResult{a, err} }); err != nil {
			t.Fatalf("AppendAsync %d: %v", i, err)
		}
	}
	srv.Resume()
	resumed = true
	out := make([]asyncResult, len(msgs))
	for i, ch := range results {
		select {
		case out[i] = <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("append %d not answered", i)
		}
	}
	return out
}

// scriptCalls returns how many script calls (EVALSHA, EVAL) the server ran.
func scriptCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	sha, _ := commandStat(t, c, "evalsha")
	eval, _ := commandStat(t, c, "eval")
	return sha + eval
}

// TestAppendBatchInOneCall: appends of several rooms of one partition that
// reach Redis together are stored by one script call each batch, every
// room in the order queued, with a send repeated within the batch stored
// once; when the bus is ahead of the clock, the whole batch follows it,
// having read its newest entry (for the push) with no XADD refused.
// The rooms' messages come interleaved, and each call reads each room
// once (the script is given them grouped by room).
func TestAppendBatchInOneCall(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pausing Redis needs a private redis-server")
	}
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts})
	c := srv.Client()
	ctx := context.Background()
	rooms := roomsOfOnePartition(3, parts)
	mustAppend(t, b, send(rooms[0], "", "warm-up")) // loads the script
	// The bus is an hour ahead: every seq of the batch must follow it.
	future := pipeline.Seq{MS: uint64(time.Now().Add(time.Hour).UnixMilli()), N: 3}
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: b.Keys().Bus(0), ID: future.String(), Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	const n = 60
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, send(rooms[i%len(rooms)], fmt.Sprint("r", i), fmt.Sprint("m", i)))
	}
	// The same send again, in the same batch: acked with the first one.
	msgs = append(msgs, send(rooms[1], "r1", "m1 again"))
	res := appendAll(t, srv, b, msgs)

	calls := scriptCalls(t, c)
	if calls > 2 {
		t.Errorf("%d script calls for %d appends of one partition queued together, want at most 2", calls, len(msgs))
	}
	if reads, _ := commandStat(t, c, "pttl"); reads > calls*len(rooms) {
		t.Errorf("%d script calls read rooms %d times, want at most %d (once per room and call)", calls, reads, calls*len(rooms))
	}
	// The bus's newest entry is its last ID: never read with the dearer
	// XINFO STREAM.
	if infos, _ := commandStat(t, c, "xinfo|stream"); infos != 0 {
		t.Errorf("%d XINFO STREAMs to follow a bus whose newest entry is its last ID, want none", infos)
	}
	last := map[string]string{} // room's last seq
	newest := future.String()
	for i, r := range res[:n] {
		if r.err != nil || r.a.Duplicate || r.a.ID != msgs[i].UUID {
			t.Fatalf("append %d: %+v, %v; want stored", i, r.a, r.err)
		}
		room := rooms[i%len(rooms)]
		before := last[room]
		if before == "" {
			before = future.String()
		}
		if _, err := pipeline.ParseSeq(r.a.Seq); err != nil || pipeline.CompareSeq(r.a.Seq, before) <= 0 {
			t.Fatalf("append %d: seq %s (%v) not above %s", i, r.a.Seq, err, before)
		}
		last[room] = r.a.Seq
		if pipeline.CompareSeq(r.a.Seq, newest) > 0 {
			newest = r.a.Seq
		}
	}
	if dup := res[n]; dup.err != nil || !dup.a.Duplicate || dup.a.Seq != res[1].a.Seq || dup.a.ID != msgs[1].UUID {
		t.Fatalf("repeated send: %+v, %v; want a duplicate of %+v", dup.a, dup.err, res[1].a)
	}
	for j, room := range rooms {
		page, err := b.History(ctx, room, pipeline.HistoryQuery{Limit: n})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		if j == 0 {
			want = append(want, "warm-up")
		}
		for i := j; i < n; i += len(rooms) {
			want = append(want, fmt.Sprint("m", i))
		}
		var got []string
		for _, m := range page.Messages {
			got = append(got, m.Text)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("history of %s = %v, want %v", room, got, want)
		}
	}
	st, err := b.BusState(ctx, 0)
	if err != nil || st.Last != newest {
		t.Fatalf("bus state %+v, %v; want last %s", st, err, newest)
	}
	// The first call's look at the bus's newest entry (for the push)
	// raised its first ID above it: no XADD of it was refused on an ID
	// already taken. (A second call's first XADD is: it cannot tell its
	// last ID, ahead of the clock, from one of a lost bus.)
	if _, refused := commandStat(t, c, "xadd"); refused > calls-1 {
		t.Errorf("%d XADDs refused on a bus ahead of the clock in %d calls, want at most %d: the newest entry read for the push gives the next ID", refused, calls, calls-1)
	}
}

// TestAppendFailureIsOwn: a message that cannot be stored (its room's key
// holds a string) fails alone, leaving nothing in the bus and no send
// record; the messages of the same batch are stored.
func TestAppendFailureIsOwn(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pausing Redis needs a private redis-server")
	}
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts})
	c := srv.Client()
	ctx := context.Background()
	rooms := roomsOfOnePartition(2, parts)
	good, broken := rooms[0], rooms[1]
	if err := c.Set(ctx, b.Keys().Room(broken), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	msgs := []*message.Message{send(good, "g1", "one"), send(broken, "b1", "lost"), send(good, "g2", "two")}
	res := appendAll(t, srv, b, msgs)
	if res[1].err == nil || !errors.Is(res[1].err, pipeline.ErrUnavailable) || !strings.Contains(res[1].err.Error(), "WRONGTYPE") {
		t.Fatalf("append to a room whose key is a string: %+v, %v; want unavailable naming WRONGTYPE", res[1].a, res[1].err)
	}
	for _, i := range []int{0, 2} {
		if res[i].err != nil || res[i].a.Seq == "" {
			t.Fatalf("append %d: %+v, %v; want stored", i, res[i].a, res[i].err)
		}
	}
	xs, err := c.XRange(ctx, b.Keys().Bus(0), "-", "+").Result()
	if err != nil || len(xs) != 2 || xs[0].ID != res[0].a.Seq || xs[1].ID != res[2].a.Seq {
		t.Fatalf("bus holds %v, %v; want the two stored messages", xs, err)
	}
	if n, err := c.Exists(ctx, b.Keys().Sent(broken, "alice", "b1")).Result(); err != nil || n != 0 {
		t.Fatalf("send record of the failed append: exists %d, %v; want none", n, err)
	}
	// The epoch made for the room expires like one whose room stored a
	// message, or it would stay for good if the room is never written.
	if ttl, err := c.PTTL(ctx, b.Keys().Epoch(broken)).Result(); err != nil || ttl <= 0 {
		t.Fatalf("epoch key of the room that stored nothing: PTTL %v, %v; want the room TTL", ttl, err)
	}
	// Once the room's key is fixed, the retry is stored, not a duplicate.
	if err := c.Del(ctx, b.Keys().Room(broken)).Err(); err != nil {
		t.Fatal(err)
	}
	if a := mustAppend(t, b, send(broken, "b1", "lost")); a.Duplicate {
		t.Fatalf("retry after a failure: %+v, want stored", a)
	}
}

// TestAppendMetadata: the stored entry's metadata is the message's, with
// seq and epoch set by the store (replacing any given), whatever the number
// and the lengths of its entries (each msgpack size class).
func TestAppendMetadata(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 4})
	ctx := context.Background()
	many := map[string]string{}
	for i := range 20 {
		many[fmt.Sprint("k", i)] = fmt.Sprint("v", i)
	}
	cases := []struct {
		name string
		meta map[string]string
	}{
		{"few", map[string]string{"a": "b"}},
		{"more than 15 entries", many},
		{"empty value", map[string]string{"e": ""}},
		{"32 bytes", map[string]string{"x": strings.Repeat("x", 32)}},
		{"300 bytes", map[string]string{strings.Repeat("k", 300): strings.Repeat("y", 300)}},
		{"70000 bytes", map[string]string{"z": strings.Repeat("z", 70000)}},
		{"seq and epoch given", map[string]string{pipeline.MetaSeq: "1-1", pipeline.MetaEpoch: "old"}},
		{"utf-8", map[string]string{"ключ": "значение ✓"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := "meta-" + strings.ReplaceAll(tc.name, " ", "-")
			m := send(room, "", "text")
			for k, v := range tc.meta {
				m.Metadata.Set(k, v)
			}
			a := mustAppend(t, b, m)
			xs, err := b.Client().XRange(ctx, b.Keys().Room(room), "-", "+").Result()
			if err != nil || len(xs) != 1 {
				t.Fatalf("xrange = %v, %v", xs, err)
			}
			raw, _ := xs[0].Values["metadata"].(string)
			var md map[string]string
			if err := msgpack.Unmarshal([]byte(raw), &md); err != nil {
				t.Fatalf("metadata is not a msgpack map of strings: %v", err)
			}
			want := maps.Clone(map[string]string(m.Metadata))
			want[pipeline.MetaSeq] = a.Seq
			want[pipeline.MetaEpoch] = a.Epoch
			if !maps.Equal(md, want) {
				t.Fatalf("stored metadata %v, want %v", md, want)
			}
			if xs[0].Values["payload"] != "text" || xs[0].Values["_watermill_message_uuid"] != m.UUID {
				t.Fatalf("entry %v", xs[0].Values)
			}
		})
	}
}

// TestAppendBatchOfPartitionsInOneCall: on a single Redis, appends of
// several partitions that reach Redis together are stored by one script
// call, each in its own bus and each room in order, with a duplicate and a
// failure answered
// alone; each bus counts its own IDs, so a bus ahead of the clock does not
// move the seqs of the others.
func TestAppendBatchOfPartitionsInOneCall(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pausing Redis needs a private redis-server")
	}
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts})
	c := srv.Client()
	ctx := context.Background()
	// Two rooms of each partition.
	var rooms []string
	count := make([]int, parts)
	for i := 0; len(rooms) < 2*parts; i++ {
		room := fmt.Sprint("r-", i)
		if p := pipeline.PartitionOf(room, parts); count[p] < 2 {
			count[p]++
			rooms = append(rooms, room)
		}
	}
	broken := "broken-0"
	for i := 0; pipeline.PartitionOf(broken, parts) != 2; i++ {
		broken = fmt.Sprint("broken-", i)
	}
	if err := c.Set(ctx, b.Keys().Room(broken), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	warm := mustAppend(t, b, send(rooms[0], "", "warm-up")) // loads the script
	future := pipeline.Seq{MS: uint64(time.Now().Add(time.Hour).UnixMilli()), N: 3}
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: b.Keys().Bus(0), ID: future.String(), Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	const n = 40
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, send(rooms[i%len(rooms)], fmt.Sprint("r", i), fmt.Sprint("m", i)))
	}
	msgs = append(msgs, send(rooms[3], "r3", "m3 again"), send(broken, "b", "lost"))
	res := appendAll(t, srv, b, msgs)

	if calls := scriptCalls(t, c); calls > 2 {
		t.Errorf("%d script calls for %d appends of %d partitions queued together, want at most 2", calls, len(msgs), parts)
	}
	last := map[string]string{} // room's last seq
	for i, r := range res[:n] {
		if r.err != nil || r.a.Duplicate || r.a.ID != msgs[i].UUID || r.a.Epoch == "" {
			t.Fatalf("append %d: %+v, %v; want stored", i, r.a, r.err)
		}
		room := rooms[i%len(rooms)]
		p := pipeline.PartitionOf(room, parts)
		if prev, ok := last[room]; ok && pipeline.CompareSeq(r.a.Seq, prev) <= 0 {
			t.Fatalf("append %d: seq %s not above %s, the last of room %s", i, r.a.Seq, prev, room)
		}
		last[room] = r.a.Seq
		ahead := pipeline.CompareSeq(r.a.Seq, future.String()) > 0
		if ahead != (p == 0) {
			t.Fatalf("append %d of partition %d: seq %s, ahead of the clock: %v", i, p, r.a.Seq, ahead)
		}
	}
	if dup := res[n]; dup.err != nil || !dup.a.Duplicate || dup.a.Seq != res[3].a.Seq || dup.a.ID != msgs[3].UUID || dup.a.Epoch != res[3].a.Epoch {
		t.Fatalf("repeated send: %+v, %v; want a duplicate of %+v", dup.a, dup.err, res[3].a)
	}
	if bad := res[n+1]; bad.err == nil || !errors.Is(bad.err, pipeline.ErrUnavailable) || !strings.Contains(bad.err.Error(), "WRONGTYPE") {
		t.Fatalf("append to a room whose key is a string: %+v, %v; want unavailable naming WRONGTYPE", bad.a, bad.err)
	}
	for p := range parts {
		xs, err := c.XRange(ctx, b.Keys().Bus(p), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, x := range xs {
			if x.ID != future.String() {
				got = append(got, x.ID)
			}
		}
		if p == pipeline.PartitionOf(rooms[0], parts) {
			want = append(want, warm.Seq)
		}
		for i, r := range res[:n] {
			if pipeline.PartitionOf(rooms[i%len(rooms)], parts) == p {
				want = append(want, r.a.Seq)
			}
		}
		slices.SortFunc(want, pipeline.CompareSeq) // rooms come one after another
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("bus %d holds %v, want %v", p, got, want)
		}
	}
}

// commandStat returns the calls and failed calls of one command (e.g.
// "xadd") that the server counted.
func commandStat(t *testing.T, c *redis.Client, cmd string) (calls, failed int) {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for name, stats := range infoFields(info) {
		if name != "cmdstat_"+cmd {
			continue
		}
		for kv := range strings.SplitSeq(stats, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.Atoi(v) // the counts are integers; the rest is not read
			switch k {
			case "calls":
				calls = n
			case "failed_calls":
				failed = n
			}
		}
	}
	return calls, failed
}

// TestAppendCallsStartAfterTheirLastID: one instance's script calls that
// follow each other within a millisecond on one bus take the next IDs
// above the last one stored, instead of first trying an ID the previous
// call used: no XADD fails and no bus's last ID is read. Each
// millisecond's IDs start at 0.
func TestAppendCallsStartAfterTheirLastID(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("command statistics need a private redis-server")
	}
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 1})
	c := srv.Client()
	warm := mustAppend(t, b, send("lobby", "", "warm-up")) // loads the script
	if err := c.ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	sharedMS := 0
	last, err := pipeline.ParseSeq(warm.Seq)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a := mustAppend(t, b, send("lobby", fmt.Sprintf("c-%d", i), "m"))
		seq, err := pipeline.ParseSeq(a.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if !last.Less(seq) {
			t.Fatalf("append %d: seq %s not above %s", i, a.Seq, last)
		}
		if seq.MS == last.MS {
			sharedMS++
		} else if seq.N != 0 {
			// The first ID of a millisecond is <ms>-0, as Redis's own.
			t.Fatalf("append %d: seq %s is the first of its millisecond, want %d-0", i, a.Seq, seq.MS)
		}
		last = seq
	}
	if sharedMS == 0 {
		t.Fatalf("no two of %d appends shared a millisecond: the machine is too slow for this test to show anything", n)
	}
	xadds, failed := commandStat(t, c, "xadd")
	reads, _ := commandStat(t, c, "xinfo|stream")
	if failed != 0 || reads != 0 || xadds != 2*n {
		t.Fatalf("%d appends (%d within the millisecond of the one before): %d XADDs, %d failed, %d XINFO STREAMs; want %d, 0, 0", n, sharedMS, xadds, failed, reads, 2*n)
	}
}

// TestAppendAfterFailedAppends: messages that could not be stored in their
// room leave no entry in their bus, but the last one's ID stays the bus's
// last generated ID. A call that follows them in the same millisecond must
// still store its message above that ID, not be refused because the bus's
// newest remaining entry is below it.
func TestAppendAfterFailedAppends(t *testing.T) {
	t.Run("same millisecond", testAppendAfterFailedAppends)
	t.Run("deleted tail ahead", testAppendAfterDeletedTail)
}

// testAppendAfterDeletedTail: a bus ahead of the clock whose newest
// entries were deleted is followed above the last ID it generated, not
// above its newest remaining entry: the script's look at that entry is
// refused, and it reads the last generated ID (XINFO STREAM), once.
func testAppendAfterDeletedTail(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("counting commands needs a private redis-server")
	}
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 1})
	c := srv.Client()
	ctx := context.Background()
	mustAppend(t, b, send("lobby", "", "warm-up")) // loads the script
	ahead := uint64(time.Now().Add(time.Hour).UnixMilli())
	bus := b.Keys().Bus(0)
	for n := uint64(1); n <= 3; n++ {
		id := pipeline.Seq{MS: ahead, N: n}.String()
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: bus, ID: id, Values: []any{"x", "y"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.XDel(ctx, bus, pipeline.Seq{MS: ahead, N: 2}.String(), pipeline.Seq{MS: ahead, N: 3}.String()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	a, err := b.Append(ctx, send("lobby", "after", "kept"))
	if err != nil {
		t.Fatalf("append after a deleted tail: %v", err)
	}
	if want := (pipeline.Seq{MS: ahead, N: 4}).String(); a.Seq != want {
		t.Errorf("seq %s, want %s: above the last generated ID", a.Seq, want)
	}
	if infos, _ := commandStat(t, c, "xinfo|stream"); infos != 1 {
		t.Errorf("%d XINFO STREAMs, want 1: after the newest entry was refused", infos)
	}
}

func testAppendAfterFailedAppends(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pausing Redis needs a private redis-server")
	}
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 1})
	c := srv.Client()
	ctx := context.Background()
	const broken = "broken"
	if err := c.Set(ctx, b.Keys().Room(broken), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	const rounds = 100
	var last pipeline.Seq
	for i := range rounds {
		// Three failures in one call: the last one's ID is three above
		// the bus's newest remaining entry, more than two looks at that
		// entry (one ID higher each) would reach.
		for j, r := range appendAll(t, srv, b, []*message.Message{
			send(broken, fmt.Sprint("b-", i), "lost"), send(broken, fmt.Sprint("c-", i), "lost"), send(broken, fmt.Sprint("d-", i), "lost"),
		}) {
			if r.err == nil || !strings.Contains(r.err.Error(), "WRONGTYPE") {
				t.Fatalf("round %d: append %d to a room whose key is a string: %v; want WRONGTYPE", i, j, r.err)
			}
		}
		a, err := b.Append(ctx, send("lobby", fmt.Sprint("g-", i), "kept"))
		if err != nil {
			t.Fatalf("round %d: append after failed ones: %v", i, err)
		}
		seq, err := pipeline.ParseSeq(a.Seq)
		if err != nil || !last.Less(seq) {
			t.Fatalf("round %d: seq %s after %s (%v)", i, a.Seq, last, err)
		}
		last = seq
	}
	if got, err := c.XLen(ctx, b.Keys().Bus(0)).Result(); err != nil || got != rounds {
		t.Fatalf("bus holds %d entries, %v; want %d", got, err, rounds)
	}
}
