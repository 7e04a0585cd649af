package testredis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
)

// TestCluster: the helper's cluster has three primaries serving slots,
// KeySlot agrees with CLUSTER KEYSLOT, a migrated slot's keys are served
// by its new primary, and a killed primary's replica is promoted and
// serves its keys.
func TestCluster(t *testing.T) {
	c := testredis.StartCluster(t)
	if got := len(c.Primaries()); got != 3 {
		t.Fatalf("got %d primaries, want 3", got)
	}
	ctx := context.Background()
	cc := c.Client()
	for i := range 50 {
		key := fmt.Sprintf("chat:{p%02d}:bus", i)
		want, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := testredis.KeySlot(key); int64(got) != want {
			t.Fatalf("KeySlot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, want)
		}
	}
	key := c.Prefix + ":k"
	if err := cc.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	from := c.PrimaryOf(key)
	var to *testredis.Node
	for _, n := range c.Primaries() {
		if n != from {
			to = n
		}
	}
	c.MigrateSlot(testredis.KeySlot(key), to, 0)
	if got := c.PrimaryOf(key); got != to {
		t.Fatalf("after the migration %q is served by %s, want %s", key, got.Addr, to.Addr)
	}
	if got, err := to.Client().Get(ctx, key).Result(); err != nil || got != "v" {
		t.Fatalf("new primary has %q, %v; want v", got, err)
	}
	if n, err := from.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("old primary holds %d keys, %v; want none", n, err)
	}
	replica := c.ReplicaOf(c.PrimaryOf(key))
	ro := redis.NewClient(&redis.Options{Addr: replica.Addr, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		return cn.ReadOnly(ctx).Err()
	}})
	defer ro.Close()
	for ro.Get(ctx, key).Val() != "v" {
		time.Sleep(10 * time.Millisecond) // replication is asynchronous
	}
	killed, replica := c.KillPrimaryOf(key)
	c.WaitPromoted(replica)
	if got := c.PrimaryOf(key); got != replica {
		t.Fatalf("%q is served by %s, want the promoted %s (killed %s)", key, got.Addr, replica.Addr, killed.Addr)
	}
	if got, err := replica.Client().Get(ctx, key).Result(); err != nil || got != "v" {
		t.Fatalf("promoted replica has %q, %v; want v", got, err)
	}
}
