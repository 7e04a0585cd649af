package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// startClusterInstance runs a server on a free loopback port with a Redis
// backend made of cfg (16 partitions, so that rooms spread over every
// primary of a cluster), until t ends.
func startClusterInstance(t *testing.T, cfg redisstore.Config) *instance {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Logger, cfg.Timeout = log, time.Second
	b, err := redisstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := testserver.Start(t, server.Config{
		Backend: backend.Redis(b, log), Logger: log,
		WS:            ws.Config{FrameRate: 1e6, FrameBurst: 1e6, SendQueue: 4096},
		ReportEvery:   100 * time.Millisecond,
		PresenceEvery: 100 * time.Millisecond,
	})
	return &instance{Instance: in, backend: b}
}

// roomsOnEveryPrimary returns per rooms for each primary of cl, under keys.
func roomsOnEveryPrimary(cl *testredis.Cluster, keys redisstore.Keys, per int) []string {
	count := map[string]int{}
	var rooms []string
	for i := 0; len(rooms) < 3*per; i++ {
		room := fmt.Sprintf("room%02d", i)
		n := cl.PrimaryOf(keys.Room(room)).Addr
		if count[n] < per {
			count[n]++
			rooms = append(rooms, room)
		}
	}
	return rooms
}

// TestClusterInstancesDeliverInOrder: on a three-primary Redis Cluster,
// three instances deliver rooms of every primary to clients spread over
// them in one order per room, none lost or doubled; history and resume
// work whichever instance the client reaches.
func TestClusterInstancesDeliverInOrder(t *testing.T) {
	t.Parallel()
	cl := testredis.StartCluster(t)
	cfg := redisstore.Config{URL: cl.URL, Prefix: cl.Prefix, Partitions: redisstore.DefaultPartitions}
	ins := []*instance{startClusterInstance(t, cfg), startClusterInstance(t, cfg), startClusterInstance(t, cfg)}
	rooms := roomsOnEveryPrimary(cl, ins[0].backend.Keys(), 1)
	var clients []*wstest.Client
	for i, in := range ins {
		for j := range 2 {
			c := dial(t, in, fmt.Sprintf("u%d%d", i, j))
			for _, room := range rooms {
				joinRoom(t, c, map[string]any{"type": "join", "room": room, "history": 0})
			}
			clients = append(clients, c)
		}
	}
	const n = 40
	var wg sync.WaitGroup
	for i := range ins {
		sender := clients[2*i]
		wg.Go(func() {
			for k := range n {
				for _, room := range rooms {
					text := fmt.Sprintf("s%d-%s-%03d", i, room, k)
					if err := sender.Say(room, text, text); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	total := len(ins) * n * len(rooms)
	reference := map[string]string{}
	for ci, c := range clients {
		perRoom := map[string][]string{}
		seen := map[string]bool{}
		next := map[string]int{}
		for _, m := range messages(t, c, total) {
			if seen[m.Room+m.Seq] {
				t.Fatalf("client %d got %s %s twice", ci, m.Room, m.Seq)
			}
			seen[m.Room+m.Seq] = true
			perRoom[m.Room] = append(perRoom[m.Room], m.Seq+"="+m.Text)
			sender := m.Text[:len(m.Text)-4]
			if want := fmt.Sprintf("%s-%03d", sender, next[sender]); m.Text != want {
				t.Fatalf("client %d: got %s, want %s (sender order)", ci, m.Text, want)
			}
			next[sender]++
		}
		for _, room := range rooms {
			got := strings.Join(perRoom[room], ",")
			if ref, ok := reference[room]; !ok {
				reference[room] = got
			} else if got != ref {
				t.Fatalf("client %d saw room %s in another order", ci, room)
			}
		}
	}
	cc := cl.Client()
	for _, room := range rooms {
		xs, err := cc.XLen(context.Background(), ins[0].backend.Keys().Room(room)).Result()
		if err != nil || xs != int64(len(ins)*n) {
			t.Fatalf("room %s stream has %d entries, %v; want %d", room, xs, err, len(ins)*n)
		}
	}

	// History on join and resume after a disconnect, across instances.
	for _, room := range rooms {
		bob := dial(t, ins[1], "bob")
		f := joinRoom(t, bob, map[string]any{"type": "join", "room": room, "history": 5})
		if len(f.History) != 5 {
			t.Fatalf("history of %s on join: %d messages, want 5", room, len(f.History))
		}
		last := f.History[4].Seq
		bob.Close()
		for i := range 3 {
			sendAcked(t, clients[0], room, fmt.Sprintf("later-%s-%d", room, i))
		}
		bob2 := dial(t, ins[2], "bob")
		f = joinRoom(t, bob2, map[string]any{"type": "join", "room": room, "since": last})
		var got []string
		for _, m := range f.History {
			got = append(got, m.Text)
		}
		if want := fmt.Sprintf("later-%[1]s-0,later-%[1]s-1,later-%[1]s-2", room); strings.Join(got, ",") != want || f.Truncated {
			t.Fatalf("resume of %s = %v (truncated %v), want %s", room, got, f.Truncated, want)
		}
	}
}

// TestClusterFailover: a primary is SIGKILLed while two instances carry
// traffic in rooms of every primary; its replica is promoted and the
// instances follow without a restart. Every send is answered (ack or
// unavailable, never silence), /readyz says 503 during the switch, and
// every room delivers again afterwards. Without --redis-wait-replicas the
// test reports the acked messages lost with the primary.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	clusterFailover(t, 0)
}

// TestClusterFailoverWaitReplicas: the same with WaitReplicas 1, where no
// acked message may be lost.
func TestClusterFailoverWaitReplicas(t *testing.T) {
	t.Parallel()
	clusterFailover(t, 1)
}

func clusterFailover(t *testing.T, waitReplicas int) {
	cl := testredis.StartCluster(t)
	cfg := redisstore.Config{
		URL: cl.URL, Prefix: cl.Prefix, Partitions: redisstore.DefaultPartitions,
		WaitReplicas: waitReplicas, WaitTimeout: 500 * time.Millisecond,
	}
	ins := []*instance{startClusterInstance(t, cfg), startClusterInstance(t, cfg)}
	keys := ins[0].backend.Keys()
	rooms := roomsOnEveryPrimary(cl, keys, 2)
	victim := rooms[0]

	tr := startTraffic(t, ins, rooms)
	// Readiness is sampled throughout.
	var notReady atomic.Int64
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		for !tr.stop.Load() {
			if resp, err := http.Get(ins[0].URL() + "/readyz"); err == nil {
				if resp.StatusCode == http.StatusServiceUnavailable {
					notReady.Add(1)
				}
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	killed, replica := cl.KillPrimaryOf(keys.Room(victim))
	cl.WaitPromoted(replica)
	promotedAt := time.Now()
	t.Logf("killed primary %s of %s; replica %s promoted after %v", killed.Addr, victim, replica.Addr, promotedAt.Sub(killedAt).Round(time.Millisecond))
	// The killed node comes back as the replica of the promoted one (with
	// wait-replicas, its shard takes no acked write until then).
	killed.Restart()
	cl.WaitHealthy()
	t.Logf("old primary rejoined as a replica after %v", time.Since(killedAt).Round(time.Millisecond))

	// Delivery resumes for every room: each gets acks after the promotion.
	tr.ackedAfter(promotedAt, 10)
	tr.finish()
	<-readyDone
	// Every acked message that is stored reaches both watchers, once.
	lost := tr.delivered(cl.Client(), keys)
	// Order is not checked: without wait-replicas an acked message lost
	// with the primary may have been delivered, and the promoted replica
	// can store the next ones below its seq.
	acked, refused, inWindow, _ := tr.counts("", killedAt, promotedAt)
	t.Logf("wait-replicas %d: %d acked (%d during the switch), %d answered unavailable, readyz 503 seen %d times; %d acked messages lost with the killed primary",
		waitReplicas, acked, inWindow, refused, notReady.Load(), len(lost))
	for i, s := range lost {
		if i == 5 {
			t.Logf("... and %d more", len(lost)-5)
			break
		}
		t.Logf("lost: %s seq %s acked %v before the kill", s.text, s.seq, killedAt.Sub(s.at).Round(time.Millisecond))
	}
	if refused == 0 {
		t.Error("no send was answered unavailable during the switch")
	}
	if notReady.Load() == 0 {
		t.Error("/readyz never said 503 during the switch")
	}
	if waitReplicas > 0 && len(lost) > 0 {
		t.Errorf("with wait-replicas %d, %d acked messages were lost", waitReplicas, len(lost))
	}
}

// TestClusterSlotMigration: the slot of one room's partition moves to
// another primary while two instances carry traffic in rooms of every
// primary. Every send is answered (ack, or unavailable while the slot's
// keys move); no acked message is lost, doubled or delivered out of order;
// and each instance's pushed subscription of the partition, unsubscribed
// by the old primary, subscribes again on the new one.
func TestClusterSlotMigration(t *testing.T) {
	t.Parallel()
	cl := testredis.StartCluster(t)
	cfg := redisstore.Config{URL: cl.URL, Prefix: cl.Prefix, Partitions: redisstore.DefaultPartitions}
	ins := []*instance{startClusterInstance(t, cfg), startClusterInstance(t, cfg)}
	keys := ins[0].backend.Keys()
	rooms := roomsOnEveryPrimary(cl, keys, 1)
	p := pipeline.PartitionOf(rooms[0], keys.Partitions)
	bus := keys.Bus(p)
	channel := keys.BusChannel(p, 0)
	from := cl.PrimaryOf(bus)
	var to *testredis.Node
	for _, n := range cl.Primaries() {
		if n != from {
			to = n
		}
	}
	ctx := context.Background()
	// subscribers returns how many connections of node subscribe to the
	// partition's channel.
	subscribers := func(node *testredis.Node) int64 {
		n, err := node.Client().PubSubShardNumSub(ctx, channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n[channel]
	}
	waitSubscribers := func(node *testredis.Node, want int64) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for got := subscribers(node); got != want; got = subscribers(node) {
			if time.Now().After(deadline) {
				t.Fatalf("%s has %d subscribers of %s, want %d", node.Addr, got, channel, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitSubscribers(from, int64(len(ins)))

	tr := startTraffic(t, ins, rooms)
	time.Sleep(time.Second)
	// The slot stays half moved for 0.5 s twice: sends get TRYAGAIN while
	// its keys are to move (answered unavailable), then ASK to the new
	// owner, which pushes on its channel while the subscriptions are
	// still on the old one.
	mt := cl.MigrateSlot(testredis.KeySlot(bus), to, 500*time.Millisecond)
	waitSubscribers(to, int64(len(ins)))
	if n := subscribers(from); n != 0 {
		t.Fatalf("the old primary %s still has %d subscribers of %s", from.Addr, n, channel)
	}
	tr.ackedAfter(time.Now(), 10)
	tr.finish()
	if lost := tr.delivered(cl.Client(), keys); len(lost) > 0 {
		t.Fatalf("%d acked messages are not stored, the first %s (seq %s)", len(lost), lost[0].text, lost[0].seq)
	}
	tr.inOrder()
	acked, refused, _, refusedMoving := tr.counts(rooms[0], mt.Start, mt.Keys)
	_, _, ackedUnheard, _ := tr.counts(rooms[0], mt.NewOwner, mt.Done)
	t.Logf("slot %d of %s moved from %s to %s in %v: %d acked, %d answered unavailable (%d while its keys were to move), %d acked while the old owner kept the subscriptions",
		testredis.KeySlot(bus), rooms[0], from.Addr, to.Addr, mt.Done.Sub(mt.Start).Round(time.Millisecond), acked, refused, refusedMoving, ackedUnheard)
	if ackedUnheard == 0 {
		t.Fatalf("no send to %s was acked while the new owner had the slot and the old one the subscriptions", rooms[0])
	}
}
