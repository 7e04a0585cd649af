package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// newPresenceBackend returns a backend on srv under prefix, closed in
// t.Cleanup: one instance of a deployment.
func newPresenceBackend(t *testing.T, srv *testredis.Server, prefix string) *redisstore.Backend {
	t.Helper()
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: prefix, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestPresenceContract runs the presence contract suite against Redis:
// each deployment has a key prefix of its own, and each of its instances a
// backend (and so a connection pool) of its own.
func TestPresenceContract(t *testing.T) {
	srv := testredis.Start(t)
	var deployments atomic.Int64
	storetest.Presence(t, func(t *testing.T) storetest.NewPresence {
		prefix := fmt.Sprintf("%sp%d", srv.Prefix, deployments.Add(1))
		return func(instanceID string, ttl time.Duration) pipeline.Presence {
			return newPresenceBackend(t, srv, prefix).NewPresence(instanceID, ttl)
		}
	})
}

// TestPresenceKeysExpire: a room's presence set and version always have a
// TTL, a few times the longest ttl of the instances in the room, which an
// instance with a shorter ttl does not cut short.
func TestPresenceKeysExpire(t *testing.T) {
	srv := testredis.Start(t)
	b := newPresenceBackend(t, srv, srv.Prefix)
	c := srv.Client()
	ctx := context.Background()
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	set, ver := b.Keys().Presence("lobby"), b.Keys().PresenceVersion("lobby")

	const long = 10 * time.Second
	if _, err := b.NewPresence("a", long).Sync(ctx, map[string][]string{"lobby": {"alice"}}); err != nil {
		t.Fatal(err)
	}
	if got := pttl(set); got <= long || got > 3*long {
		t.Fatalf("presence set TTL after a write = %v, want more than the ttl %v, at most 3 times it", got, long)
	}
	if got := pttl(ver); got <= 0 {
		t.Fatalf("presence version TTL = %v, want one", got)
	}
	if _, err := b.NewPresence("b", 100*time.Millisecond).Sync(ctx, map[string][]string{"lobby": {"bob"}}); err != nil {
		t.Fatal(err)
	}
	if got := pttl(set); got <= long {
		t.Fatalf("presence set TTL after an instance with a short ttl wrote = %v, want more than %v", got, long)
	}
}

// TestPresenceDropsExpiredEntries: the entries of an instance that stopped
// are removed from the set by the others' refreshes, so the set holds only
// live entries.
func TestPresenceDropsExpiredEntries(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a := newPresenceBackend(t, srv, srv.Prefix).NewPresence("a", ttl)
	bb := newPresenceBackend(t, srv, srv.Prefix)
	b := bb.NewPresence("b", ttl)
	if _, err := a.Sync(ctx, map[string][]string{"lobby": {"alice"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Sync(ctx, map[string][]string{"lobby": {"bob"}}); err != nil {
			t.Fatal(err)
		}
		members, err := srv.Client().ZRange(ctx, bb.Keys().Presence("lobby"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(members) == "[b|bob]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence set = %v after a stopped for 5s, want [b|bob]", members)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// commandCalls returns how many times Redis ran cmd.
func commandCalls(t *testing.T, srv *testredis.Server, cmd string) int {
	t.Helper()
	info, err := srv.Client().Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPresenceReadsOnlyChangedRooms: between refreshes, an instance reads a
// room's set only when the room's version changed.
func TestPresenceReadsOnlyChangedRooms(t *testing.T) {
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("counting commands needs a private redis-server")
	}
	ctx := context.Background()
	a := newPresenceBackend(t, srv, srv.Prefix).NewPresence("a", time.Hour)
	b := newPresenceBackend(t, srv, srv.Prefix).NewPresence("b", time.Hour)
	sync := func(p *redisstore.Presence, local map[string][]string) map[string][]string {
		t.Helper()
		got, err := p.Sync(ctx, local)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	bLocal := map[string][]string{"lobby": {"bob"}, "den": {"bob"}}
	sync(a, map[string][]string{"lobby": {"alice"}})
	sync(b, bLocal) // refreshes and reads both rooms

	before := commandCalls(t, srv, "zrangebyscore")
	for range 5 {
		sync(b, bLocal)
	}
	if got := commandCalls(t, srv, "zrangebyscore") - before; got != 0 {
		t.Fatalf("5 syncs without changes read %d sets, want 0", got)
	}
	sync(a, map[string][]string{"lobby": {"alice", "carol"}})
	before = commandCalls(t, srv, "zrangebyscore")
	got := sync(b, bLocal)
	if n := commandCalls(t, srv, "zrangebyscore") - before; n != 1 {
		t.Fatalf("b's sync after one of its rooms changed read %d sets, want 1", n)
	}
	if fmt.Sprint(got) != "map[den:[bob] lobby:[alice bob carol]]" {
		t.Fatalf("b = %v, want the lobby with carol", got)
	}
}

// TestPresenceUnavailableAndRecovery: while Redis is down Sync fails with
// pipeline.ErrUnavailable; once Redis is back without its data, the
// instances' refreshes restore every user and the others notice.
func TestPresenceUnavailableAndRecovery(t *testing.T) {
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("stopping Redis needs a private redis-server")
	}
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a := newPresenceBackend(t, srv, srv.Prefix).NewPresence("a", ttl)
	b := newPresenceBackend(t, srv, srv.Prefix).NewPresence("b", ttl)
	aLocal, bLocal := map[string][]string{"lobby": {"alice"}}, map[string][]string{"lobby": {"bob"}}
	if _, err := a.Sync(ctx, aLocal); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Sync(ctx, bLocal); err != nil || fmt.Sprint(got) != "map[lobby:[alice bob]]" {
		t.Fatalf("b before the restart = %v, %v; want alice and bob", got, err)
	}

	srv.Stop()
	if _, err := b.Sync(ctx, bLocal); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("sync with Redis down: %v, want ErrUnavailable", err)
	}
	srv.Restart()

	deadline := time.Now().Add(5 * time.Second)
	for {
		_, aerr := a.Sync(ctx, aLocal)
		got, berr := b.Sync(ctx, bLocal)
		if aerr == nil && berr == nil && fmt.Sprint(got) == "map[lobby:[alice bob]]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("b after the restart = %v (errors %v, %v), want alice and bob", got, aerr, berr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
