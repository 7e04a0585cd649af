package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// BenchmarkIngestRedis measures the whole ingest path on the Redis
// backend, Submit → middleware → pipelined append → ack, with 1, 16 and
// 256 concurrent senders over 100 rooms. It reports acked messages per
// second and the refusals of an overloaded store (which a sender retries).
//
//	go test -run '^$' -bench IngestRedis -benchtime 20000x ./pipeline/
func BenchmarkIngestRedis(b *testing.B) {
	for _, senders := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			rs := testredis.Start(b)
			log := slog.New(slog.DiscardHandler)
			be, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 16, Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = be.Close() })
			in, err := pipeline.NewIngest(pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- in.Run(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
			<-in.Running()

			var next, acked, overloaded atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for s := range senders {
				wg.Go(func() {
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						sub := pipeline.Submission{
							ConnID: fmt.Sprint("c", s), User: fmt.Sprint("u", s), Room: fmt.Sprint("room-", n%100),
							Text: "hello there", Ref: fmt.Sprint("r", n),
						}
						for {
							o, err := in.Submit(context.Background(), sub)
							if err != nil {
								b.Error(err)
								return
							}
							if o.Err == nil {
								acked.Add(1)
								break
							}
							if o.Err.Code != pipeline.CodeUnavailable {
								b.Errorf("refused: %v", o.Err)
								return
							}
							overloaded.Add(1)
							time.Sleep(o.Err.RetryAfter) // retry with the same ref
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if got := acked.Load(); got != int64(b.N) {
				b.Fatalf("%d acked, want %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.ReportMetric(float64(overloaded.Load())/float64(b.N), "retries/msg")
		})
	}
}
