package ws_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chatstream/chatstream/ws"
)

// TestQueueDeliversEveryFrameInOrder proves that a connection whose frames
// are queued by several goroutines at once (the deliveries of rooms in
// different partitions, each from its partition's goroutine) gets every
// message once and in each room's order, whether its writer takes the
// whole queue at a time or only part of it (MaxBatchBytes 1: one frame per
// write, the rest left queued), as the writer and the queue swap arrays.
func TestQueueDeliversEveryFrameInOrder(t *testing.T) {
	for _, batchBytes := range []int{1, 0} {
		t.Run(fmt.Sprintf("MaxBatchBytes=%d", batchBytes), func(t *testing.T) {
			h := start(t, ws.Config{FrameRate: 1e6, FrameBurst: 1 << 20, SendQueue: 1 << 14, SendQueueBytes: 64 << 20, MaxBatchBytes: batchBytes})
			const rooms, per = 8, 250
			rcv := h.dial(t, "rcv")
			for r := range rooms {
				join(t, rcv, fmt.Sprintf("q%d", r), 0)
			}
			var wg sync.WaitGroup
			for r := range rooms {
				snd := h.dial(t, fmt.Sprintf("s%d", r))
				room := fmt.Sprintf("q%d", r)
				join(t, snd, room, 0)
				wg.Go(func() {
					for i := range per {
						if err := snd.Say(room, strconv.Itoa(i), "m"+strconv.Itoa(i)); err != nil {
							t.Errorf("sender %s: %v", room, err)
							return
						}
					}
					for acked := 0; acked < per; {
						f, err := snd.Next(wait)
						if err != nil {
							t.Errorf("sender %s: %d of %d acks: %v", room, acked, per, err)
							return
						}
						switch f.Type {
						case "ack":
							acked++
						case "error":
							t.Errorf("sender %s: error %s: %s", room, f.Code, f.Message)
							return
						}
					}
				})
			}
			next := make([]int, rooms)
			for got := 0; got < rooms*per; {
				f, err := rcv.Next(wait)
				if err != nil {
					t.Fatalf("after %d of %d messages: %v", got, rooms*per, err)
				}
				if f.Type != "message" {
					continue
				}
				r, err := strconv.Atoi(strings.TrimPrefix(f.Room, "q"))
				if err != nil || r < 0 || r >= rooms {
					t.Fatalf("message of room %q", f.Room)
				}
				if f.Text != strconv.Itoa(next[r]) {
					t.Fatalf("room %s: got text %q, want %d: a frame lost, repeated or out of order", f.Room, f.Text, next[r])
				}
				next[r]++
				got++
			}
			wg.Wait()
		})
	}
}
