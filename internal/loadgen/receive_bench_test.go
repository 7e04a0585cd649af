package loadgen

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// messageLine returns a message frame as the server sends it, carrying
// measured message n of sender 0 sent at ns.
func messageLine(ns, n int) []byte {
	text := "m " + strconv.Itoa(ns) + " 0 " + strconv.Itoa(n) + " "
	text += strings.Repeat("x", DefaultTextSize-len(text))
	return []byte(`{"type":"message","room":"lgbench-0","id":"01902f5e-7a40-7cc1-9d3e-5b1f0c2a9e11",` +
		`"seq":"1718781639233-` + strconv.Itoa(n) + `","user":"lgbench-s0","text":"` + text + `","ts":"2024-06-19T07:20:39.232Z"}`)
}

// newBenchRun returns a run with one sender and one receiver of room 0.
func newBenchRun() (*run, *receiver) {
	r := &run{cfg: Config{Conns: 1, Rooms: 1, Senders: 1}, group: 1, base: time.Now()}
	r.senders = []*sender{{rooms: []int{0}, acked: make([]bitset, 1)}}
	rc := &receiver{}
	r.receivers = []*receiver{rc}
	return r, rc
}

// BenchmarkReceiverLine is the generator's work per delivered message
// line, after the socket read: recognising it, parsing its header,
// recording its latency and marking it received.
func BenchmarkReceiverLine(b *testing.B) {
	r, rc := newBenchRun()
	lines := make([][]byte, 1024)
	for i := range lines {
		lines[i] = messageLine(1_000_000+i, i)
	}
	now := r.base.Add(time.Second)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.onChatstreamReceiverLine(rc, lines[i%len(lines)], now)
	}
	if rc.deliveries == 0 {
		b.Fatal("no delivery recorded")
	}
}

// BenchmarkReceive is a receiver's whole path per delivery over a real
// WebSocket on loopback: the server writes one message per frame, the
// receiver's read loop reads and handles each, through the websocket
// library or through the generator's own frame reader (frames.go). Here
// the server writes back to back, so the reader seldom finds the socket
// empty; the frame reader's gain, half the read system calls, shows when
// messages arrive one at a time, as in the scenarios (docs/PERFORMANCE.md).
func BenchmarkReceive(b *testing.B) {
	b.Run("reader=library", func(b *testing.B) { benchReceive(b, websocket.DefaultDialer) })
	b.Run("reader=frames", func(b *testing.B) {
		benchReceive(b, &websocket.Dialer{NetDialContext: frameDialer(&net.Dialer{})})
	})
}

func benchReceive(b *testing.B, dialer *websocket.Dialer) {
	frames := make([][]byte, 1024)
	for i := range frames {
		frames[i] = messageLine(1_000_000+i, i)
	}
	start := make(chan int)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for i := range <-start {
			if ws.WriteMessage(websocket.TextMessage, frames[i%len(frames)]) != nil {
				return
			}
		}
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")) // ends the read loop
	}))
	b.Cleanup(srv.Close)
	ws, _, err := dialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ws.Close() })
	r, rc := newBenchRun()
	b.ReportAllocs()
	b.ResetTimer()
	start <- b.N
	closed := r.readLoop(ws, func(line []byte, now time.Time) { r.onChatstreamReceiverLine(rc, line, now) })
	b.StopTimer()
	if rc.deliveries != int64(b.N) || closed != "1000" {
		b.Fatalf("%d deliveries, closed %q; want %d and 1000", rc.deliveries, closed, b.N)
	}
}
