package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

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
