package redisstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// BenchmarkAppendReplicated measures the cost of replica-acknowledged
// writes and of a cluster on the publish path: Append from 1 and 64
// concurrent callers (256-byte texts with refs over 64 rooms) on a primary
// with one replica and on a three-primary cluster with a replica each,
// with WaitReplicas 0 (the default) and 1. It reports acked messages per
// second and the ack latency (p50, p99) of single appends.
//
//	go test -run '^$' -bench AppendReplicated -benchtime 20000x ./pipeline/redisstore/
func BenchmarkAppendReplicated(b *testing.B) {
	rs := testredis.StartReplicated(b)
	cl := testredis.StartCluster(b)
	text := make([]byte, 256)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	topologies := []struct{ name, url string }{{"primary+replica", rs.URL}, {"cluster3x2", cl.URL}}
	var run atomic.Int64
	for _, top := range topologies {
		for _, wait := range []int{0, 1} {
			for _, callers := range []int{1, 64} {
				b.Run(fmt.Sprintf("%s/wait=%d/callers=%d", top.name, wait, callers), func(b *testing.B) {
					be, err := redisstore.New(redisstore.Config{
						URL: top.url, Prefix: fmt.Sprintf("%sb%d", rs.Prefix, run.Add(1)), BusMaxLen: 1 << 20,
						WaitReplicas: wait, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
					})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = be.Close() })
					ctx := context.Background()
					var next atomic.Int64
					// mu guards lat.
					var mu sync.Mutex
					var lat []time.Duration
					b.ReportAllocs()
					b.ResetTimer()
					start := time.Now()
					var wg sync.WaitGroup
					for range callers {
						wg.Go(func() {
							var mine []time.Duration
							for {
								i := next.Add(1)
								if i > int64(b.N) {
									break
								}
								t0 := time.Now()
								if _, err := be.Append(ctx, benchMessage(fmt.Sprintf("room-%d", i%64), text)); err != nil {
									b.Error(err)
									return
								}
								mine = append(mine, time.Since(t0))
							}
							mu.Lock()
							lat = append(lat, mine...)
							mu.Unlock()
						})
					}
					wg.Wait()
					b.StopTimer()
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
					if len(lat) > 0 {
						slices.Sort(lat)
						b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
						b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
					}
				})
			}
		}
	}
}
