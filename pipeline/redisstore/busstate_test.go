package redisstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// TestSubscribeReportsTrimmedPosition: a subscription from a position the
// bus trimmed away first hands out a gap marker naming the position, then
// the oldest entries kept; one from a position still kept hands out the
// entry after it.
func TestSubscribeReportsTrimmedPosition(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts, BusMaxLen: 10})
	room := roomsOfOnePartition(1, parts)[0]
	p := pipeline.PartitionOf(room, parts)
	var seqs []string
	for range 300 {
		seqs = append(seqs, mustAppend(t, b, send(room, "", "traffic")).Seq)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ch, err := b.Subscribe(ctx, p, seqs[4])
	if err != nil {
		t.Fatal(err)
	}
	gap := next(t, ch)
	gap.Ack()
	if pos := gap.Metadata.Get(pipeline.MetaFeedGap); pos != seqs[4] {
		t.Fatalf("first message %v, want a gap marker at %s", gap.Metadata, seqs[4])
	}
	oldest := gap.Metadata.Get(pipeline.MetaFeedOldest)
	if m := next(t, ch); m.Metadata.Get(pipeline.MetaSeq) != oldest || pipeline.CompareSeq(oldest, seqs[5]) <= 0 {
		t.Fatalf("after the marker: seq %s, want the oldest kept %s (after %s)", m.Metadata.Get(pipeline.MetaSeq), oldest, seqs[5])
	}

	kept := len(seqs) - 5
	ch, err = b.Subscribe(ctx, p, seqs[kept])
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); m.Metadata.Get(pipeline.MetaSeq) != seqs[kept+1] {
		t.Fatalf("from a kept position: %v, want seq %s", m.Metadata, seqs[kept+1])
	}
}

// runDelivery runs a delivery of cfg until the test ends, and returns it
// once it follows every partition.
func runDelivery(t *testing.T, cfg pipeline.DeliveryConfig) *pipeline.Delivery {
	t.Helper()
	d, err := pipeline.NewDelivery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	<-d.Running()
	return d
}

// gapDeliverer records deliveries and resyncs; it holds the message whose
// text is "hold" until hold is closed.
type gapDeliverer struct {
	hold      chan struct{}
	holding   chan struct{}
	delivered chan pipeline.Message
	resyncs   chan bool // whether the resync matched room
	room      string
}

func (d *gapDeliverer) Deliver(m pipeline.Message) {
	if m.Text == "hold" {
		close(d.holding)
		<-d.hold
	}
	d.delivered <- m
}

func (d *gapDeliverer) Resync(match func(room string) bool) int {
	d.resyncs <- match(d.room)
	return 1
}

// TestDeliveryResyncsWhenTrimmedWhileBehind: a delivery held on one
// message while the bus trims far past it resyncs the partition's members
// once when it reads on, before delivering what follows, even though no
// periodic check runs (Buses is not set). That is with blocking reads
// (PollBus); a pushed delivery gets the entries trimmed in their pushes,
// so it delivers every one of them, in order, and resyncs nothing.
func TestDeliveryResyncsWhenTrimmedWhileBehind(t *testing.T) {
	t.Parallel()
	for _, poll := range []bool{true, false} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			t.Parallel()
			heldWhileTrimmed(t, poll)
		})
	}
}

func heldWhileTrimmed(t *testing.T, poll bool) {
	srv := testredis.Start(t)
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts, BusMaxLen: 10, PollBus: poll})
	room := roomsOfOnePartition(1, parts)[0]
	del := &gapDeliverer{hold: make(chan struct{}), holding: make(chan struct{}), delivered: make(chan pipeline.Message, 512),
		resyncs: make(chan bool, 8), room: room}
	runDelivery(t, pipeline.DeliveryConfig{Feed: b, Deliverer: del})
	var once sync.Once
	release := func() { once.Do(func() { close(del.hold) }) }
	t.Cleanup(release) // before the delivery stops: it may be held

	mustAppend(t, b, send(room, "", "hold"))
	select {
	case <-del.holding:
	case <-time.After(5 * time.Second):
		t.Fatal("the first message was not delivered")
	}
	var seqs []string
	for range 300 {
		seqs = append(seqs, mustAppend(t, b, send(room, "", "traffic")).Seq)
	}
	release()
	if m := <-del.delivered; m.Text != "hold" {
		t.Fatalf("delivered %q first", m.Text)
	}
	if !poll {
		for i, seq := range seqs {
			select {
			case m := <-del.delivered:
				if m.Seq != seq {
					t.Fatalf("message %d delivered is %s, want %s", i, m.Seq, seq)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("message %d of 300 not delivered", i)
			}
		}
		if n := len(del.resyncs); n != 0 {
			t.Fatalf("%d resyncs, want none: nothing was missed", n)
		}
		return
	}
	select {
	case matched := <-del.resyncs:
		if !matched {
			t.Fatal("the resync does not match the room's partition")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resync: the entries trimmed while the delivery was behind went unnoticed")
	}
	last := seqs[len(seqs)-1]
	for m := range del.delivered {
		if m.Seq == last {
			break
		}
	}
	if len(del.resyncs) != 0 {
		t.Fatalf("%d more resyncs for the same gap", len(del.resyncs))
	}
}

// TestDeliveryResetWithinEpochFollowsOn: a bus that lost its newest entry
// within its epoch (as a failover that lost the last writes leaves it)
// resyncs the partition's members once, and the delivery follows it on
// from its newest entry: nothing stored before is delivered again, and no
// further resync follows for the same loss.
func TestDeliveryResetWithinEpochFollowsOn(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts})
	room := roomsOfOnePartition(1, parts)[0]
	p := pipeline.PartitionOf(room, parts)
	del := &gapDeliverer{delivered: make(chan pipeline.Message, 512), resyncs: make(chan bool, 8), room: room}
	const every = 50 * time.Millisecond
	runDelivery(t, pipeline.DeliveryConfig{Feed: b, Deliverer: del, Buses: b, ReportEvery: every})
	ctx := context.Background()

	const n = 20
	var last string
	for range n {
		last = mustAppend(t, b, send(room, "", "before")).Seq
	}
	for range n {
		select {
		case <-del.delivered:
		case <-time.After(5 * time.Second):
			t.Fatal("the messages stored before were not delivered")
		}
	}
	// A check sees the bus's epoch first: a loss when the epoch is not
	// known yet is followed from the start (it may be a new epoch).
	time.Sleep(10 * every)
	if err := srv.Client().XDel(context.Background(), b.Keys().Bus(p), last).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case matched := <-del.resyncs:
		if !matched {
			t.Fatal("the resync does not match the room's partition")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resync after the bus lost the entry delivered last")
	}
	after := mustAppend(t, b, send(room, "", "after"))
	select {
	case m := <-del.delivered:
		if m.Seq != after.Seq {
			t.Fatalf("delivered %q (seq %s) after the reset, want the new message %s", m.Text, m.Seq, after.Seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message stored after the reset was not delivered")
	}
	time.Sleep(6 * every) // several more checks
	if len(del.resyncs) != 0 || len(del.delivered) != 0 {
		t.Fatalf("%d more resyncs and %d more deliveries for the same loss", len(del.resyncs), len(del.delivered))
	}

	// A new epoch whose bus already lost an entry (the append script
	// deletes the bus entry of a message it could not store) is followed
	// from its start: one resync for the reset, none for the entry
	// missing before the first one read.
	c, bus := srv.Client(), b.Keys().Bus(p)
	xs, err := c.XRangeN(ctx, bus, "-", "+", 1).Result()
	if err != nil || len(xs) == 0 {
		t.Fatalf("reading an entry to copy: %v, %v", xs, err)
	}
	ms, _, _ := strings.Cut(after.Seq, "-")
	later, _ := strconv.ParseInt(ms, 10, 64)
	gone, kept := fmt.Sprintf("%d-0", later+1000), fmt.Sprintf("%d-1", later+1000)
	tx := c.TxPipeline()
	tx.Del(ctx, bus)
	tx.Set(ctx, b.Keys().BusEpoch(p), "another-epoch", 0)
	tx.XAdd(ctx, &redis.XAddArgs{Stream: bus, ID: gone, Values: xs[0].Values})
	tx.XAdd(ctx, &redis.XAddArgs{Stream: bus, ID: kept, Values: xs[0].Values})
	tx.XDel(ctx, bus, gone)
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-del.resyncs:
	case <-time.After(5 * time.Second):
		t.Fatal("no resync after the bus started a new epoch")
	}
	select {
	case m := <-del.delivered:
		if m.Seq != kept {
			t.Fatalf("delivered seq %s in the new epoch, want %s", m.Seq, kept)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the new epoch's entry was not delivered")
	}
	time.Sleep(6 * every)
	if len(del.resyncs) != 0 {
		t.Fatalf("%d more resyncs after the new epoch's reset", len(del.resyncs))
	}
}

// TestDeliveryPassesUndecodableEntry: an entry the delivery cannot decode
// is skipped but counts as read: the delivery's position moves past it, so
// a resubscription does not read it (and log it) again.
func TestDeliveryPassesUndecodableEntry(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	const parts = 4
	b := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: parts})
	del := &gapDeliverer{delivered: make(chan pipeline.Message, 8), resyncs: make(chan bool, 8)}
	d := runDelivery(t, pipeline.DeliveryConfig{Feed: b, Deliverer: del, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()

	const p = 2
	id, err := srv.Client().XAdd(ctx, &redis.XAddArgs{Stream: b.Keys().Bus(p), Values: []string{"not", "a message"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.Positions()[p] != id {
		if time.Now().After(deadline) {
			t.Fatalf("position %q after an undecodable entry, want its id %s", d.Positions()[p], id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(del.delivered) != 0 {
		t.Fatalf("%d deliveries of an undecodable entry", len(del.delivered))
	}
}
