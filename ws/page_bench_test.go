package ws_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/ws"
)

// BenchmarkJoinFullPage measures one join of the re-join attack: a resume
// from "0-0" in a room of 300 texts of 4 KiB of "<". The page reader reads
// backwards in chunks and stops at MaxPageBytes, so the reply and its cost
// are bounded by the budget, not by the room.
func BenchmarkJoinFullPage(b *testing.B) {
	h := startKeeping(b, 1000, ws.Config{FrameRate: 1e9, FrameBurst: 1e9, FloodFactor: 1e3})
	filler, err := wstest.Dial(h.srv.URL, "filler")
	if err != nil {
		b.Fatal(err)
	}
	defer filler.Close()
	if err := filler.Join("big", 0); err != nil {
		b.Fatal(err)
	}
	text := strings.Repeat("<", pipeline.DefaultMaxTextBytes)
	const n = 300
	for i := range n {
		if err := filler.Say("big", text, fmt.Sprint("f", i)); err != nil {
			b.Fatal(err)
		}
	}
	for acks := 0; acks < n; {
		f, err := filler.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" || f.Type == "error" }, wait)
		if err != nil || f.Type == "error" {
			b.Fatalf("filling: %s, %v", f.Raw, err)
		}
		acks++
	}

	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(h.srv.URL, "http", "ws", 1)+"/ws?user=reader", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rejoin := []byte(`{"type":"join","room":"big","since":"0-0"}`)
	joined := []byte(`{"type":"joined"`)
	var size int
	var buf bytes.Buffer
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := conn.WriteMessage(websocket.TextMessage, rejoin); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			_, r, err := conn.NextReader()
			if err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			if _, err := buf.ReadFrom(r); err != nil {
				b.Fatal(err)
			}
			// A batch may hold presence frames around the joined one.
			for frame := range bytes.SplitSeq(buf.Bytes(), []byte{'\n'}) {
				if bytes.HasPrefix(frame, joined) {
					got, size = true, len(frame)
				}
			}
			if size > ws.DefaultMaxPageBytes+1024 {
				b.Fatalf("joined of %d bytes, budget %d", size, ws.DefaultMaxPageBytes)
			}
		}
	}
	b.ReportMetric(float64(size), "bytes/joined")
}
