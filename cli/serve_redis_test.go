package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestRedisBusPushFlag: by default serve's partition subscriptions listen
// for pushes (one shard channel subscriber per partition bus); with
// --no-redis-bus-push they block reading the buses instead and nothing
// listens on the channels.
func TestRedisBusPushFlag(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	admin := rs.Client()
	for _, push := range []bool{true, false} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			prefix := fmt.Sprintf("%spush%v", rs.Prefix, push)
			keys := redisstore.Keys{Prefix: prefix, Partitions: 2}
			args := []string{"serve", "--addr", "127.0.0.1:0", "--internal-addr=", "--redis", rs.URL,
				"--redis-prefix", prefix, "--partitions", "2", "--shutdown-timeout", "2s"}
			if !push {
				args = append(args, "--no-redis-bus-push")
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() { done <- Run(ctx, args, io.Discard, io.Discard) }()
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(15 * time.Second):
					t.Error("serve did not stop")
				}
			}()
			listening := func() (n int64) {
				subs, err := admin.PubSubShardNumSub(context.Background(), keys.BusChannel(0, 0), keys.BusChannel(1, 0)).Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range subs {
					n += c
				}
				return n
			}
			// Both modes read each bus once subscribed; a blocking read
			// of a bus shows as a client blocked in XREAD.
			blocked := func() (n int) {
				list, err := admin.ClientList(context.Background()).Result()
				if err != nil {
					t.Fatal(err)
				}
				return strings.Count(list, " cmd=xread ")
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				if push && listening() == 2 {
					break
				}
				if !push && blocked() >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 10s: %d channel subscribers, %d clients in XREAD", listening(), blocked())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !push {
				if n := listening(); n != 0 {
					t.Fatalf("%d channel subscribers with --no-redis-bus-push, want 0", n)
				}
			}
		})
	}
}
