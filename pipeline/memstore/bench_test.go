package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// BenchmarkAppend measures one Append of a 100-byte message in the steady
// state of a full backend: to one room at its RoomMaxLen cap ("one room"),
// round-robin over more rooms than MaxRooms, so that every append evicts a
// room ("evicting"), and to one room at its MaxBytes budget, which drops
// its oldest message on every append ("one room at MaxBytes"). A send
// refused because the feed's queue is full is retried once the feed's
// goroutine ran.
func BenchmarkAppend(b *testing.B) {
	const roomMaxLen, maxRooms = 1000, 100
	text := []byte(strings.Repeat("x", 100))
	cases := []struct {
		name     string
		rooms    int
		maxBytes int64
	}{
		{"one room", 1, 0},
		{"evicting", maxRooms + 1, 0},
		{"one room at MaxBytes", 1, 200 << 10}, // about 400 messages
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			be, err := memstore.New(memstore.Config{RoomMaxLen: roomMaxLen, MaxRooms: maxRooms, MaxBytes: tc.maxBytes, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = be.Close() }) // the benchmark is over
			msgs := make([]*message.Message, tc.rooms)
			for i := range msgs {
				msgs[i] = message.NewMessage(fmt.Sprint("bench-", i), text)
				msgs[i].Metadata.Set(pipeline.MetaRoom, fmt.Sprint("room-", i))
				msgs[i].Metadata.Set(pipeline.MetaUser, "alice")
			}
			ctx := context.Background()
			appendOne := func(i int) {
				for {
					_, err := be.Append(ctx, msgs[i%len(msgs)])
					if !errors.Is(err, pipeline.ErrUnavailable) {
						if err != nil {
							b.Fatal(err)
						}
						return
					}
					runtime.Gosched() // the feed's queue is full
				}
			}
			for i := range 2 * roomMaxLen * tc.rooms {
				appendOne(i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				appendOne(i)
				i++
			}
		})
	}
}

// BenchmarkCollectHistory measures what a backend holding history costs
// the garbage collector: 100 rooms of 3,000 messages each (100-byte texts,
// each with a ref, as the gateway stores them), then one full collection
// per iteration. It reports the heap that remains per message kept
// (heap-B/msg) and the heap objects per message (objects/msg), which a
// collection marks every time. "no ref" stores the same without refs.
func BenchmarkCollectHistory(b *testing.B) {
	for _, refs := range []bool{true, false} {
		name := "ref"
		if !refs {
			name = "no ref"
		}
		b.Run(name, func(b *testing.B) { benchmarkCollectHistory(b, refs) })
	}
}

func benchmarkCollectHistory(b *testing.B, refs bool) {
	const rooms, perRoom = 100, 3000
	be, err := memstore.New(memstore.Config{RoomMaxLen: perRoom, MaxRooms: rooms, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() }) // the benchmark is over
	ctx := context.Background()
	text := strings.Repeat("x", 100)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range rooms * perRoom {
		// Each message is built as the gateway builds one: its own
		// strings, which the backend may keep.
		msg := message.NewMessage(uuid.NewString(), []byte(text))
		msg.Metadata.Set(pipeline.MetaRoom, fmt.Sprint("room-", i%rooms))
		msg.Metadata.Set(pipeline.MetaUser, fmt.Sprint("user-", i%(2*rooms)))
		if refs {
			msg.Metadata.Set(pipeline.MetaRef, fmt.Sprint("ref-", i))
		}
		msg.Metadata.Set(pipeline.MetaConnID, fmt.Sprint("conn-", i%(2*rooms)))
		msg.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
		for {
			_, err := be.Append(ctx, msg)
			if !errors.Is(err, pipeline.ErrUnavailable) {
				if err != nil {
					b.Fatal(err)
				}
				break
			}
			runtime.Gosched() // the feed's queue is full
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
	}
	b.StopTimer()
	n := float64(rooms * perRoom)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/msg")
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/n, "objects/msg")
	runtime.KeepAlive(be)
}
