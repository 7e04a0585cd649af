package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestSentinelOptions: the redis-sentinel:// form names sentinels, a
// master and a database; nonsense is refused with the expected form, and
// a password never appears in the error.
func TestSentinelOptions(t *testing.T) {
	o, err := redisstore.Options("redis-sentinel://bob:s3cret@10.0.0.1:26379,10.0.0.2:26379/chat/2")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(o.Addrs) != "[10.0.0.1:26379 10.0.0.2:26379]" || o.MasterName != "chat" || o.DB != 2 || o.Username != "bob" || o.Password != "s3cret" {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range []string{
		"redis-sentinel://h:26379",
		"redis-sentinel://h:26379/",
		"redis-sentinel://h/chat",
		"redis-sentinel://h:26379/chat/x",
		"redis-sentinel://bob:s3cret@h:0/chat",
	} {
		_, err := redisstore.Options(bad)
		if err == nil || !strings.Contains(err.Error(), "want redis-sentinel://") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Options(%q) = %v, want an error showing the form, without the password", bad, err)
		}
	}
}

// TestSentinelFailover: with --redis naming three real sentinels, appends
// go to the primary; when it is SIGKILLed the sentinels promote its
// replica, appends in between are answered unavailable, and then the same
// backend, without a restart, appends to the new primary, which has the
// history acked before.
func TestSentinelFailover(t *testing.T) {
	rs := testredis.StartReplicated(t)
	sentinels := testredis.StartSentinels(t, rs, 3)
	ctx := context.Background()
	b := newBackend(t, redisstore.Config{
		URL: "redis-sentinel://" + sentinels + "/" + testredis.SentinelMaster, Prefix: rs.Prefix, Partitions: 4,
		Timeout: time.Second,
	})
	before := mustAppend(t, b, send("lobby", "r1", "before"))
	replica := rs.Replica.Client()
	for replica.XLen(ctx, b.Keys().Room("lobby")).Val() != 1 {
		time.Sleep(10 * time.Millisecond) // replication is asynchronous
	}
	rs.Primary.Kill()
	refused := 0
	deadline := time.Now().Add(30 * time.Second)
	var after pipeline.Appended
	for {
		a, err := b.Append(ctx, send("lobby", "r2", "after"))
		if err == nil {
			after = a
			break
		}
		if !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("append during the failover: %v, want ErrUnavailable", err)
		}
		refused++
		if time.Now().After(deadline) {
			t.Fatalf("no append succeeded within 30 s of the kill: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	testredis.WaitSentinelPrimary(t, sentinels, rs.Replica)
	page, err := b.History(ctx, "lobby", pipeline.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range page.Messages {
		got = append(got, m.Seq)
	}
	if strings.Join(got, ",") != before.Seq+","+after.Seq {
		t.Fatalf("history after the failover = %v, want %s then %s", got, before.Seq, after.Seq)
	}
	if refused == 0 {
		t.Error("no append was answered unavailable while the primary was down")
	}
	t.Logf("%d appends answered unavailable during the failover", refused)
}

// TestSentinelSwitchoverMovesPushes: after a switchover (SENTINEL FAILOVER
// with the old primary still up, which answers a subscription's PINGs and
// gets no pushes), a pushed subscription moves to the new primary while
// the old one still calls itself primary, before Sentinel reconfigures it
// and closes its clients. Its channel stays open, and it hands out what
// was stored before and after the switch, each once.
func TestSentinelSwitchoverMovesPushes(t *testing.T) {
	rs := testredis.StartReplicated(t)
	sentinels := testredis.StartSentinels(t, rs, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := redisstore.Config{
		URL: "redis-sentinel://" + sentinels + "/" + testredis.SentinelMaster, Prefix: rs.Prefix, Partitions: 1,
		Timeout: time.Second,
	}
	b := newBackend(t, cfg)
	channel := b.Keys().BusChannel(0, 0)
	old, replica := rs.Primary.Client(), rs.Replica.Client()
	ch, err := b.Subscribe(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, old, channel, 1)
	before := mustAppend(t, b, send("lobby", "r1", "before the switchover"))
	wantUUIDs(t, ch, before.ID)

	sc := redis.NewSentinelClient(&redis.Options{Addr: strings.Split(sentinels, ",")[0]})
	defer sc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Refused until the sentinel has seen the replica in sync.
		err := sc.Failover(ctx, testredis.SentinelMaster).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	testredis.WaitSentinelPrimary(t, sentinels, rs.Replica)
	deadline = time.Now().Add(30 * time.Second)
	for {
		n, err := replica.PubSubShardNumSub(ctx, channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[channel] == 1 {
			break
		}
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("the subscription ended at the switchover, want it to move to the new primary")
			}
			t.Fatalf("got %s %q during the switchover, want nothing", m.UUID, m.Payload)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no subscriber on the new primary 30s after the switchover")
		}
		time.Sleep(10 * time.Millisecond)
	}
	role, err := old.Do(ctx, "ROLE").Slice()
	if err != nil {
		t.Fatal(err)
	}
	if role[0] != "master" {
		t.Fatalf("the subscription moved when Sentinel made the old primary a %v, want it to move before", role[0])
	}
	waitSubscribers(t, old, channel, 0)

	// b's appends go to the new primary once its append client hears of
	// the switch; a backend started now asks the sentinels, which all
	// name it.
	for _, addr := range strings.Split(sentinels, ",") {
		testredis.WaitSentinelPrimary(t, addr, rs.Replica)
	}
	after := mustAppend(t, newBackend(t, cfg), send("lobby", "r2", "after the switchover"))
	wantUUIDs(t, ch, after.ID)
	noMore(t, ch)
}

// waitSubscribers waits up to 10s for channel to have want subscribers on
// the server of c.
func waitSubscribers(t *testing.T, c *redis.Client, channel string, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := c.PubSubShardNumSub(context.Background(), channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[channel] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d subscribers on %s after 10s, want %d", channel, n[channel], c.Options().Addr, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
