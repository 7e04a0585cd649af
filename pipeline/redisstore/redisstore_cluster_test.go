package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestCluster runs, on one real Redis Cluster of three primaries with a
// replica each, what the single-Redis tests prove: the backend and presence
// contract suites, keys of a room in its slot, partitions spread over every
// primary, the tools' SCANs finding rooms on every primary, dead letters,
// and replica-acknowledged appends. Each subtest has its own key prefix.
func TestCluster(t *testing.T) {
	cl := testredis.StartCluster(t)
	var n atomic.Int64
	prefix := func() string { return fmt.Sprintf("%sc%d", cl.Prefix, n.Add(1)) }
	cc := cl.Client()

	for _, push := range []bool{false, true} {
		t.Run(fmt.Sprintf("Contract/push=%v", push), func(t *testing.T) {
			storetest.Run(t, storetest.Harness{
				New: func(t *testing.T, o storetest.Options) pipeline.Backend {
					return newBackend(t, redisstore.Config{
						URL: cl.URL, Prefix: prefix(), Partitions: 4,
						RoomMaxLen: int64(o.RoomMaxLen), RoomTTL: o.RoomTTL, IdempotencyWindow: o.IdempotencyWindow,
						PollBus: !push,
					})
				},
				Lose: func(t *testing.T, b pipeline.Backend, _ storetest.Options, room string) {
					k := b.(*redisstore.Backend).Keys()
					if err := cc.Del(context.Background(), k.Room(room), k.Epoch(room)).Err(); err != nil {
						t.Fatal(err)
					}
				},
			})
		})
	}

	t.Run("PresenceContract", func(t *testing.T) {
		storetest.Presence(t, func(t *testing.T) storetest.NewPresence {
			p := prefix()
			return func(instanceID string, ttl time.Duration) pipeline.Presence {
				return newBackend(t, redisstore.Config{URL: cl.URL, Prefix: p, Partitions: 4}).NewPresence(instanceID, ttl)
			}
		})
	})

	// A room's history, epoch, send records and bus share one slot
	// (CLUSTER KEYSLOT), so the append script may touch them all.
	t.Run("RoomKeysInOneSlot", func(t *testing.T) {
		ctx := context.Background()
		k := redisstore.Keys{Prefix: redisstore.DefaultPrefix, Partitions: redisstore.DefaultPartitions}
		for _, room := range []string{"lobby", "a:room", "{odd}", "ü-room", "r42"} {
			keys := []string{k.Room(room), k.Epoch(room), k.Sent(room, "alice", "ref-1"), k.BusOf(room), k.BusEpoch(pipeline.PartitionOf(room, k.Partitions))}
			var slots []int64
			for _, key := range keys {
				s, err := cc.ClusterKeySlot(ctx, key).Result()
				if err != nil {
					t.Fatal(err)
				}
				slots = append(slots, s)
			}
			if len(slices.Compact(slices.Clone(slots))) != 1 {
				t.Fatalf("room %q: keys %v are in slots %v, want one slot", room, keys, slots)
			}
		}
	})

	// The default partition count's buses land on every primary.
	t.Run("PartitionsSpreadOverPrimaries", func(t *testing.T) {
		k := redisstore.Keys{Prefix: redisstore.DefaultPrefix, Partitions: redisstore.DefaultPartitions}
		perNode := map[string][]int{}
		for p := range k.Partitions {
			n := cl.PrimaryOf(k.Bus(p))
			perNode[n.Addr] = append(perNode[n.Addr], p)
		}
		addrs := make([]string, 0, len(perNode))
		for a := range perNode {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			var slots []string
			for _, p := range perNode[a] {
				slots = append(slots, fmt.Sprintf("p%02d→%d", p, testredis.KeySlot(k.Bus(p))))
			}
			t.Logf("%s: %d buses: %s", a, len(perNode[a]), strings.Join(slots, " "))
		}
		if len(perNode) != 3 {
			t.Fatalf("buses of %d partitions on %d primaries, want all 3", k.Partitions, len(perNode))
		}
	})

	// Rooms (the SCAN behind streams, replay --all-rooms and moderation
	// test --all-rooms) and Instances find keys on every primary.
	t.Run("ScansVisitEveryPrimary", func(t *testing.T) {
		ctx := context.Background()
		b := newBackend(t, redisstore.Config{URL: cl.URL, Prefix: prefix(), Partitions: redisstore.DefaultPartitions})
		var want []string
		onNode := map[string]bool{}
		for i := 0; len(onNode) < 3 || len(want) < 12; i++ {
			room := fmt.Sprintf("room%02d", i)
			if _, err := b.Append(ctx, send(room, "", "hi")); err != nil {
				t.Fatal(err)
			}
			want = append(want, room)
			onNode[cl.PrimaryOf(b.Keys().Room(room)).Addr] = true
		}
		sort.Strings(want)
		got, err := b.Rooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Rooms = %v, want %v (rooms on %d primaries)", got, want, len(onNode))
		}
		var ids []string
		for i := range 12 { // instance keys have no hash tag: they spread over the primaries
			id := fmt.Sprintf("inst%02d", i)
			ids = append(ids, id)
			if err := b.RecordInstance(ctx, redisstore.InstanceInfo{ID: id, StartedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		infos, err := b.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs []string
		for _, in := range infos {
			gotIDs = append(gotIDs, in.ID)
		}
		sort.Strings(gotIDs)
		if !slices.Equal(gotIDs, ids) {
			t.Fatalf("Instances = %v, want %v", gotIDs, ids)
		}
	})

	// One address of the host:port list form is a seed of the Cluster,
	// not a Redis of its own: a batch of appends to rooms of every
	// partition is stored, each on its primary.
	t.Run("OneSeedAddress", func(t *testing.T) {
		ctx := context.Background()
		b := newBackend(t, redisstore.Config{URL: cl.Nodes[0].Addr, Prefix: prefix(), Partitions: redisstore.DefaultPartitions})
		k := b.Keys()
		var rooms []string
		for p := range k.Partitions {
			rooms = append(rooms, roomOf(t, k, p))
		}
		errs := make(chan error, len(rooms))
		for _, room := range rooms {
			err := b.AppendAsync(send(room, "", "one seed"), func(_ pipeline.Appended, err error) {
				if err != nil {
					err = fmt.Errorf("room %s: %w", room, err)
				}
				errs <- err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for range rooms {
			if err := <-errs; err != nil {
				t.Fatalf("append through one seed address: %v", err)
			}
		}
		for _, room := range rooms {
			if n, err := cc.XLen(ctx, k.Room(room)).Result(); err != nil || n != 1 {
				t.Fatalf("room %s: got %d entries, %v; want 1", room, n, err)
			}
		}
	})

	t.Run("DeadLetter", func(t *testing.T) {
		ctx := context.Background()
		b := newBackend(t, redisstore.Config{URL: cl.URL, Prefix: prefix(), Partitions: 4})
		m := send("lobby", "r1", "rejected text")
		m.Metadata.Set("reason", "test")
		if err := b.DeadLetter(ctx, m); err != nil {
			t.Fatal(err)
		}
		xs, err := cc.XRange(ctx, b.Keys().Rejected(), "-", "+").Result()
		if err != nil || len(xs) != 1 {
			t.Fatalf("dead letters = %v, %v; want one", xs, err)
		}
		got, err := redisstore.DecodeEntry(xs[0])
		if err != nil || string(got.Payload) != "rejected text" {
			t.Fatalf("dead letter = %+v, %v", got, err)
		}
	})

	// With WaitReplicas 1 appends on every primary are acked once the
	// replica has them; a paused replica turns its primary's appends into
	// ErrUnavailable (ErrNotReplicated), other primaries' still succeed, and
	// a retry with the same ref after the replica is back returns the
	// message stored the first time.
	t.Run("WaitReplicas", func(t *testing.T) {
		ctx := context.Background()
		b := newBackend(t, redisstore.Config{URL: cl.URL, Prefix: prefix(), Partitions: 4, WaitReplicas: 1, WaitTimeout: 2 * time.Second})
		var rooms []string
		onNode := map[string]string{}
		for i := 0; len(onNode) < 3; i++ {
			room := fmt.Sprintf("w%02d", i)
			a := cl.PrimaryOf(b.Keys().Room(room)).Addr
			if _, ok := onNode[a]; !ok {
				onNode[a] = room
				rooms = append(rooms, room)
			}
		}
		for _, room := range rooms {
			mustAppend(t, b, send(room, "", "replicated"))
		}
		paused := rooms[0]
		replica := cl.ReplicaOf(cl.PrimaryOf(b.Keys().Room(paused)))
		replica.Pause()
		stored, err := b.Append(ctx, send(paused, "ref-p", "unconfirmed"))
		if !errors.Is(err, pipeline.ErrUnavailable) || !errors.Is(err, redisstore.ErrNotReplicated) {
			replica.Resume()
			t.Fatalf("append with the replica paused = %+v, %v; want ErrUnavailable and ErrNotReplicated", stored, err)
		}
		for _, room := range rooms[1:] {
			mustAppend(t, b, send(room, "", "other primaries still confirm"))
		}
		replica.Resume()
		again := mustAppend(t, b, send(paused, "ref-p", "unconfirmed"))
		if !again.Duplicate {
			t.Fatalf("retry = %+v, want the message stored by the unconfirmed append", again)
		}
	})
}

// TestWaitReplicasPrimaryAndReplica: on one primary with one replica,
// WaitReplicas 1 acks appends the replica has, answers unavailable
// (ErrNotReplicated) within WaitTimeout when the replica does not confirm,
// and asking for more replicas than exist always fails.
func TestWaitReplicasPrimaryAndReplica(t *testing.T) {
	rs := testredis.StartReplicated(t)
	ctx := context.Background()
	b := newBackend(t, redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	first := mustAppend(t, b, send("lobby", "ref-1", "confirmed"))
	ro := rs.Replica.Client()
	if n, err := ro.XLen(ctx, b.Keys().Room("lobby")).Result(); err != nil || n != 1 {
		t.Fatalf("replica has %d entries, %v, right after the ack; want 1", n, err)
	}
	rs.Replica.Pause()
	_, err := b.Append(ctx, send("lobby", "ref-2", "unconfirmed"))
	rs.Replica.Resume()
	if !errors.Is(err, pipeline.ErrUnavailable) || !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("append with the replica paused: %v; want ErrUnavailable and ErrNotReplicated", err)
	}
	if again := mustAppend(t, b, send("lobby", "ref-1", "confirmed")); !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retry of ref-1 = %+v, want the original %s", again, first.Seq)
	}
	two := newBackend(t, redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, WaitReplicas: 2, WaitTimeout: 100 * time.Millisecond})
	if _, err := two.Append(ctx, send("lobby", "", "needs two replicas")); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("WaitReplicas 2 with one replica: %v; want ErrNotReplicated", err)
	}
	if _, err := redisstore.New(redisstore.Config{URL: rs.URL, WaitReplicas: 1, WaitTimeout: 5 * time.Second, Timeout: time.Second}); err == nil {
		t.Fatal("a wait timeout longer than the round-trip timeout was accepted")
	}
}
