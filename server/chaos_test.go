package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
)

// member is a client of the chaos tests that records every message and
// reset it receives.
type member struct {
	c *client.Client
	// mu guards ids and resets.
	mu     sync.Mutex
	ids    map[string]bool
	resets int
}

func chaosJoin(t *testing.T, url, user, room string) *member {
	t.Helper()
	// The client lives until Close; its Dial context bounds it too.
	c, err := client.Dial(context.Background(), client.Config{
		URL: url, User: user, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Join(ctx, room, client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	m := &member{c: c, ids: make(map[string]bool)}
	go func() {
		for ev := range c.Events() {
			m.mu.Lock()
			switch ev.Type {
			case client.EventMessage:
				m.ids[ev.Message.ID] = true
			case client.EventReset:
				m.resets++
			}
			m.mu.Unlock()
		}
	}()
	return m
}

// has reports whether m received every id, and how many resets it saw.
func (m *member) has(ids []string) (bool, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		if !m.ids[id] {
			return false, m.resets
		}
	}
	return true, m.resets
}

// sendAcked sends n messages from m, retrying each refused send (the
// outage window) until it is acked or the deadline passes, and returns the
// acked ids.
func chaosSend(t *testing.T, m *member, room, prefix string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var ids []string
	for i := range n {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			ack, err := m.c.Send(ctx, room, fmt.Sprintf("%s %d", prefix, i))
			cancel()
			if err == nil {
				ids = append(ids, ack.ID)
				break
			}
			var cerr *client.Error
			if !errors.As(err, &cerr) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("send %s %d: %v", prefix, i, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("send %s %d not acked within 30s: %v", prefix, i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return ids
}

// waitAll waits until every member has every id and returns the resets
// each saw.
func waitAll(t *testing.T, what string, ids []string, ms ...*member) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resets, done := make([]int, len(ms)), true
		for i, m := range ms {
			ok, r := m.has(ids)
			resets[i] = r
			done = done && ok
		}
		if done {
			return resets
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not every member received all %d acked messages within 20s", what, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestChaosRedisRestartsEmptyClockBehind: Redis is SIGKILLed during
// traffic on two instances and restarted empty with its clock 10 minutes
// behind the data it lost (as after a failover to a host whose clock is
// behind). Every
// message acked after the restart reaches every member on both instances,
// and the members learn of the loss as a reset, never as silence.
func TestChaosRedisRestartsEmptyClockBehind(t *testing.T) {
	t.Parallel()
	for _, behind := range []bool{true, false} {
		t.Run(fmt.Sprintf("clock behind %v", behind), func(t *testing.T) {
			t.Parallel()
			chaosRestartEmpty(t, behind)
		})
	}
}

// chaosRestartEmpty runs TestChaosRedisRestartsEmptyClockBehind with
// Redis's clock 10 minutes behind the data it loses, or right (then only
// the epochs tell of the loss: the new seqs are above the old ones).
func chaosRestartEmpty(t *testing.T, behind bool) {
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("kills Redis: needs a private redis-server")
	}
	a, b := startInstance(t, rs.URL, rs.Prefix, 10_000), startInstance(t, rs.URL, rs.Prefix, 10_000)
	// Redis's clock 10 minutes behind the data it loses: the room's and
	// its bus's newest IDs are put 10 minutes ahead, so every message
	// before the restart gets a seq above them (the append script keeps
	// seqs increasing), and the empty Redis after the restart hands out
	// seqs 10 minutes below what the instances and clients have seen.
	// (libfaketime cannot shift the clock of Debian's redis-server: it
	// clashes with jemalloc, wolfcw/libfaketime#130.)
	if behind {
		ahead := fmt.Sprintf("%d-0", time.Now().Add(10*time.Minute).UnixMilli())
		keys := a.backend.Keys()
		for _, key := range []string{keys.Room("lobby"), keys.BusOf("lobby")} {
			if err := rs.Client().XAdd(context.Background(), &redis.XAddArgs{Stream: key, ID: ahead, Values: []any{"clock", "ahead"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	alice, bob := chaosJoin(t, a.URL(), "alice", "lobby"), chaosJoin(t, b.URL(), "bob", "lobby")
	// Members that never send learn of new messages only from delivery.
	carol, dave := chaosJoin(t, a.URL(), "carol", "lobby"), chaosJoin(t, b.URL(), "dave", "lobby")

	before := append(chaosSend(t, alice, "lobby", "before", 10), chaosSend(t, bob, "lobby", "before-b", 5)...)
	waitAll(t, "before the restart", before, alice, bob, carol, dave)

	// Each instance checks its buses every report interval (100 ms here):
	// let both see the buses' epochs before Redis loses them.
	time.Sleep(300 * time.Millisecond)
	rs.Kill()
	rs.Restart()

	after := append(chaosSend(t, alice, "lobby", "after", 10), chaosSend(t, bob, "lobby", "after-b", 10)...)
	waitAll(t, "after the restart", after, alice, bob, carol, dave)
	// Every member learns of the loss, whether its messages kept flowing
	// (the new seqs are above the old ones) or not: within a report
	// interval its instance resyncs it and its resume is answered reset.
	deadline := time.Now().Add(10 * time.Second)
	for i, m := range []*member{alice, bob, carol, dave} {
		for {
			if _, r := m.has(nil); r > 0 {
				break
			}
			if time.Now().After(deadline) {
				seq, epoch := m.c.LastSeq("lobby")
				t.Fatalf("member %d saw no reset of the room whose data Redis lost (at %s in epoch %q, %d connects)", i, seq, epoch, m.c.Stats().Connects)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestChaosRedisPausedRetriedRefStoredOnce: Redis stops answering
// (SIGSTOP) for 5 s: sends get unavailable (never a hang), and the client's
// retries of the same refs after SIGCONT are each acked and stored once.
func TestChaosRedisPausedRetriedRefStoredOnce(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("pauses Redis: needs a private redis-server")
	}
	in := startInstance(t, rs.URL, rs.Prefix, 10_000)
	alice, bob := chaosJoin(t, in.URL(), "alice", "lobby"), chaosJoin(t, in.URL(), "bob", "lobby")
	waitAll(t, "before the pause", chaosSend(t, alice, "lobby", "before", 3), alice, bob)

	rs.Pause()
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(5 * time.Second)
		rs.Resume()
	}()
	t.Cleanup(func() { <-resumed })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	_, err := alice.c.Send(ctx, "lobby", "during")
	cancel()
	var cerr *client.Error
	if err == nil || (!errors.As(err, &cerr) && !errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("send while Redis is paused = %v, want a refusal", err)
	}
	if took := time.Since(start); took > 4500*time.Millisecond {
		t.Fatalf("send while Redis is paused took %v", took)
	}
	<-resumed
	after := chaosSend(t, alice, "lobby", "after", 5)
	waitAll(t, "after the pause", after, alice, bob)

	// Every ref the client sent is stored once: no text appears twice.
	page, err := in.backend.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range page.Messages {
		seen[m.User+"/"+m.Ref]++
		if seen[m.User+"/"+m.Ref] > 1 && m.Ref != "" {
			t.Fatalf("ref %s/%s stored twice: %+v", m.User, m.Ref, page.Messages)
		}
	}
}
