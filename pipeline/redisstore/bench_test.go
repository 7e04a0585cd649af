package redisstore_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

func benchBackend(b *testing.B) *redisstore.Backend {
	be, _ := benchBackendServer(b)
	return be
}

func benchBackendServer(b *testing.B, inFlight ...int) (*redisstore.Backend, *testredis.Server) {
	b.Helper()
	srv := testredis.Start(b)
	cfg := redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, BusMaxLen: 1 << 22}
	if len(inFlight) > 0 {
		cfg.InFlight = inFlight[0]
	}
	be, err := redisstore.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return be, srv
}

// scriptCost resets a private server's command statistics and returns a
// function that reports, for the msgs messages appended since, Redis's own
// figures per message: the time spent in script calls (EVALSHA and EVAL,
// whose time includes the commands they run; wall time inside Redis, so a
// busy machine inflates it), the CPU time of the whole redis-server process
// (INFO cpu: scripts, network reads and writes), the script calls, and the
// commands the scripts ran. The last two are exact counts, the same on any
// machine. A shared server is left alone.
func scriptCost(b *testing.B, srv *testredis.Server) func(msgs int) {
	b.Helper()
	if !srv.Private() {
		return func(int) {}
	}
	c := srv.Client()
	ctx := context.Background()
	cpu := func() float64 {
		info, err := c.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var sec float64
		for k, v := range infoFields(info) {
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64) // Redis writes plain numbers; a bad one counts as 0
				sec += f
			}
		}
		return sec
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpu()
	return func(msgs int) {
		b.Helper()
		cpu1 := cpu()
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		var usec, scripts, cmds, refused float64
		for name, stats := range infoFields(info) {
			script := name == "cmdstat_evalsha" || name == "cmdstat_eval"
			for kv := range strings.SplitSeq(stats, ",") {
				k, v, _ := strings.Cut(kv, "=")
				f, _ := strconv.ParseFloat(v, 64) // as above
				switch {
				case script && k == "usec":
					usec += f
				case script && k == "calls":
					scripts += f
				case k == "calls" && name != "cmdstat_info" && name != "cmdstat_config":
					cmds += f
				case name == "cmdstat_xadd" && k == "failed_calls":
					refused += f
				}
			}
		}
		n := float64(msgs)
		b.ReportMetric(usec/n, "redis-µs/msg")
		b.ReportMetric((cpu1-cpu0)*1e6/n, "redis-cpu-µs/msg")
		b.ReportMetric(scripts/n, "scripts/msg")
		b.ReportMetric(cmds/n, "cmds/msg")
		// XADDs refused on an ID already used (another writer's): each
		// costs a look at the bus's newest entry and another XADD.
		b.ReportMetric(refused/n, "refused-xadds/msg")
	}
}

// infoFields yields the name: value lines of an INFO reply.
func infoFields(info string) func(yield func(k, v string) bool) {
	return func(yield func(k, v string) bool) {
		for line := range strings.Lines(info) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && !yield(k, v) {
				return
			}
		}
	}
}

func benchMessage(room string, text []byte) *message.Message {
	m := message.NewMessage(uuid.Must(uuid.NewV7()).String(), text)
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, "bench")
	m.Metadata.Set(pipeline.MetaConnID, "c-1")
	m.Metadata.Set(pipeline.MetaRef, m.UUID[24:]) // clients send refs: each append checks and writes a send record
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	// The ingest's middleware sets a correlation ID: a stored message
	// has eight metadata entries with the seq and epoch.
	m.Metadata.Set(pipeline.MetaCorrelationID, m.UUID)
	return m
}

// BenchmarkAppend measures the publish path (send record, epochs, room
// stream + bus, TTL; one script call per partition and batch), from 1
// caller and from 16 and 64 concurrent callers whose appends the batchers
// store together. 256-byte texts with refs over 64 rooms.
func BenchmarkAppend(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) { benchAppend(b, callers, 0) })
	}
}

// BenchmarkAppendInFlight measures 64 callers' appends with 1, 2 and 4
// batches in flight at once (Config.InFlight).
func BenchmarkAppendInFlight(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) { benchAppend(b, 64, n) })
	}
}

// BenchmarkAppendInstances measures 16 callers' appends through two
// instances (two backends on one Redis, callers taking them in turn), so
// that each bus stores both instances' messages, interleaved, as with
// several gateways.
func BenchmarkAppendInstances(b *testing.B) {
	b.Run("instances=2", func(b *testing.B) { benchAppend(b, 16, 0, 2) })
}

// benchAppend runs callers' appends; a third argument runs that many
// instances on one Redis.
func benchAppend(b *testing.B, callers, inFlight int, instances ...int) {
	text := make([]byte, 256)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	be, srv := benchBackendServer(b, inFlight)
	bes := []*redisstore.Backend{be}
	for len(instances) > 0 && len(bes) < instances[0] {
		other, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, BusMaxLen: 1 << 22, InFlight: inFlight})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = other.Close() })
		bes = append(bes, other)
	}
	ctx := context.Background()
	var n, caller atomic.Int64
	b.SetParallelism(callers) // GOMAXPROCS × callers goroutines
	b.ReportAllocs()
	report := scriptCost(b, srv)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		be := bes[int(caller.Add(1))%len(bes)]
		for pb.Next() {
			i := n.Add(1)
			if _, err := be.Append(ctx, benchMessage(fmt.Sprintf("room-%d", i%64), text)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	report(b.N)
}

// BenchmarkPartitionDelivery measures one partition subscription
// (watermill-redisstream fan-out mode) reading stored messages.
func BenchmarkPartitionDelivery(b *testing.B) {
	be := benchBackend(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	room := "lobby"
	part := pipeline.PartitionOf(room, be.Partitions())
	text := []byte("hello")
	// Messages are stored before the clock starts; the benchmark times the
	// subscription reading them.
	for range b.N {
		if _, err := be.Append(ctx, benchMessage(room, text)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	ch, err := be.Subscribe(ctx, part, "0-0")
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		select {
		case m := <-ch:
			m.Ack()
		case <-time.After(10 * time.Second):
			b.Fatalf("got %d of %d", i, b.N)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkBusSubscriberReadCount measures one BusSubscriber subscription
// reading a bus of stored chat entries (the append script's layout: 256-byte
// texts, msgpack metadata with seq) with different read bounds: read=1 is
// one round trip per entry, as watermill-redisstream's fan-out subscriber
// reads; the backend reads up to DefaultBusReadCount.
func BenchmarkBusSubscriberReadCount(b *testing.B) {
	text := make([]byte, 256)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	for _, count := range []int{1, 16, redisstore.DefaultBusReadCount} {
		b.Run(fmt.Sprintf("read=%d", count), func(b *testing.B) {
			be := benchBackend(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bus := be.Keys().Bus(0)
			// Entries are stored before the clock starts, in pipelined
			// XADDs of the entry layout the append script writes.
			for done := 0; done < b.N; {
				pipe := be.Client().Pipeline()
				for ; done < b.N && pipe.Len() < 1000; done++ {
					m := benchMessage("lobby", text)
					m.Metadata.Set(pipeline.MetaSeq, fmt.Sprintf("%d-0", done+1))
					values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(bus, m)
					if err != nil {
						b.Fatal(err)
					}
					pipe.XAdd(ctx, &redis.XAddArgs{Stream: bus, ID: fmt.Sprintf("%d-0", done+1), Values: values})
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			sub, err := redisstore.NewBusSubscriber(redisstore.BusSubscriberConfig{ReadCount: count}, be.Client(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sub.Close() }()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			ch, err := sub.Subscribe(ctx, bus)
			if err != nil {
				b.Fatal(err)
			}
			for i := range b.N {
				select {
				case m := <-ch:
					m.Ack()
				case <-time.After(10 * time.Second):
					b.Fatalf("got %d of %d", i, b.N)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer() // Close waits for the blocked read
		})
	}
}

// BenchmarkLiveDelivery measures live delivery, as an instance has it: a
// subscription to every partition, and one caller that appends a message
// (256-byte text, with a ref, over 64 rooms) and waits until the
// subscription hands it out before the next. A message's round trip is
// ns/op; the Redis figures (see scriptCost) include the reads or pushes
// that delivered it. bus=poll blocks reading the buses (PollBus), bus=push
// listens for pushes (the default).
func BenchmarkLiveDelivery(b *testing.B) {
	text := make([]byte, 256)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	for _, poll := range []bool{true, false} {
		name := "bus=push"
		if poll {
			name = "bus=poll"
		}
		b.Run(name, func(b *testing.B) {
			srv := testredis.Start(b)
			be, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix, PollBus: poll})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = be.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			delivered := make(chan string, 1)
			for p := range be.Partitions() {
				ch, err := be.Subscribe(ctx, p, "")
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for m := range ch {
						m.Ack()
						select {
						case delivered <- m.UUID:
						case <-ctx.Done():
							return
						}
					}
				}()
			}
			cost := scriptCost(b, srv)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m := benchMessage(fmt.Sprintf("room-%d", i%64), text)
				if _, err := be.Append(ctx, m); err != nil {
					b.Fatal(err)
				}
				select {
				case id := <-delivered:
					if id != m.UUID {
						b.Fatalf("delivered %s, want %s", id, m.UUID)
					}
				case <-time.After(10 * time.Second):
					b.Fatalf("message %d not delivered", i)
				}
			}
			b.StopTimer()
			cost(b.N)
		})
	}
}
