package ws_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/ws"
)

// fanOutClients is the number of sockets BenchmarkFanOut1000 delivers to.
const fanOutClients = 1000

// fanOutClient is one benchmark socket. Its read goroutine counts message
// objects (a batched WebSocket message holds several, one per line).
type fanOutClient struct {
	conn *websocket.Conn
	// got is the number of message objects received.
	got atomic.Int64
	// done is closed when the read goroutine ends; err is its error.
	done chan struct{}
	err  error
	// check makes the read goroutine decode every message and verify its
	// room and seq order; it is set on one client only, to keep the
	// client side cheap.
	check bool
	// bad holds (as a string) the first error frame, or with check the
	// first malformed or out-of-order message.
	bad atomic.Value
}

// fanOut is the shared state of the clients' read goroutines.
type fanOut struct {
	// total counts message objects received by all clients.
	total atomic.Int64
	// round receives a value each time total reaches a multiple of the
	// number of clients: with one message in flight, when every client has
	// it.
	round chan struct{}
	// joined counts the clients whose joined frame arrived.
	joined sync.WaitGroup
}

var (
	messagePrefix = []byte(`{"type":"message"`)
	joinedPrefix  = []byte(`{"type":"joined"`)
	errorPrefix   = []byte(`{"type":"error"`)
)

// read runs until the connection ends. It reads into one reused buffer so
// that the benchmark's allocations are the server's, not the clients'.
func (c *fanOutClient) read(f *fanOut, room string) {
	defer close(c.done)
	var last pipeline.Seq
	var buf bytes.Buffer
	for {
		_, r, err := c.conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			c.err = err
			return
		}
		for obj := range bytes.SplitSeq(buf.Bytes(), []byte{'\n'}) {
			switch {
			case bytes.HasPrefix(obj, messagePrefix):
				if c.check {
					last = c.verify(obj, room, last)
				}
				c.got.Add(1)
				if f.total.Add(1)%fanOutClients == 0 {
					select {
					case f.round <- struct{}{}:
					default:
					}
				}
			case bytes.HasPrefix(obj, joinedPrefix):
				f.joined.Done()
			case bytes.HasPrefix(obj, errorPrefix):
				c.bad.CompareAndSwap(nil, "error frame "+string(obj))
			}
			// Other server frames (presence, ...) are not counted.
		}
	}
}

// verify decodes a message object and records the first one that is not
// of room or whose seq does not follow last; it returns the new last seq.
func (c *fanOutClient) verify(obj []byte, room string, last pipeline.Seq) pipeline.Seq {
	var m struct{ Room, Seq string }
	if err := json.Unmarshal(obj, &m); err != nil || m.Room != room {
		c.bad.CompareAndSwap(nil, fmt.Sprintf("bad message %s: %v", obj, err))
		return last
	}
	seq, err := pipeline.ParseSeq(m.Seq)
	if err != nil || !last.Less(seq) {
		c.bad.CompareAndSwap(nil, fmt.Sprintf("seq %s after %s", m.Seq, last))
	}
	return seq
}

// BenchmarkFanOut1000 measures delivering one stored message to 1,000 real
// WebSocket clients in one room: each iteration hands a message with the
// next seq to the hub and waits until every client has read it. It fails
// when a client is dropped, misses a message, or sees one out of order, and
// when sockets or goroutines outlive it.
func BenchmarkFanOut1000(b *testing.B) {
	goroutines := runtime.NumGoroutine()
	// Registered first, so it runs last: after the clients are closed and
	// the gateway is shut down.
	b.Cleanup(func() { checkGoroutines(b, goroutines) })

	h := start(b, ws.Config{SendQueue: 4096})
	const room = "bench"
	f := &fanOut{round: make(chan struct{}, 1)}
	url := strings.Replace(h.srv.URL, "http", "ws", 1) + "/ws?user="
	dialer := websocket.Dialer{HandshakeTimeout: wait}
	clients := make([]*fanOutClient, 0, fanOutClients)
	b.Cleanup(func() { closeClients(b, h, clients) })
	join := []byte(`{"type":"join","room":"` + room + `","history":0}`)
	for i := range fanOutClients {
		conn, _, err := dialer.Dial(url+fmt.Sprint("u", i), nil)
		if err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		c := &fanOutClient{conn: conn, done: make(chan struct{}), check: i == 0}
		clients = append(clients, c)
		f.joined.Add(1)
		go c.read(f, room)
		if err := conn.WriteMessage(websocket.TextMessage, join); err != nil {
			b.Fatalf("client %d join: %v", i, err)
		}
	}
	joined := make(chan struct{})
	go func() {
		f.joined.Wait()
		close(joined)
	}()
	select {
	case <-joined:
	case <-time.After(4 * wait):
		b.Fatalf("clients not joined within %v", 4*wait)
	}

	base := uint64(time.Now().UnixMilli())
	msg := pipeline.Message{Room: room, User: "bench", Text: "hello, everyone — a message of typical length", TS: time.Now()}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		msg.Seq = pipeline.Seq{MS: base, N: uint64(i + 1)}.String()
		msg.ID = msg.Seq
		h.hub.Deliver(msg)
		timer.Reset(wait)
		select {
		case <-f.round:
		case <-timer.C:
			b.Fatalf("message %d: %d of %d deliveries after %v (%d slow disconnects)",
				i, f.total.Load()-int64(i)*fanOutClients, fanOutClients, wait, h.hub.SlowDisconnects())
		}
	}
	b.ReportMetric(float64(b.N)*fanOutClients/b.Elapsed().Seconds(), "deliveries/s")

	if n := h.hub.SlowDisconnects(); n != 0 {
		b.Fatalf("%d clients dropped as slow", n)
	}
	for i, c := range clients {
		if got := c.got.Load(); got != int64(b.N) {
			b.Fatalf("client %d got %d messages, want %d", i, got, b.N)
		}
		if bad := c.bad.Load(); bad != nil {
			b.Fatalf("client %d: %s", i, bad)
		}
	}
}

// closeClients closes every client with a normal close, waits for its read
// goroutine to see the server's close, and checks the hub let them go.
func closeClients(b *testing.B, h *harness, clients []*fanOutClient) {
	for _, c := range clients {
		// Best effort: a failed write shows up as an abnormal close below.
		_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(wait))
	}
	for i, c := range clients {
		select {
		case <-c.done:
			if !websocket.IsCloseError(c.err, websocket.CloseNormalClosure) {
				b.Errorf("client %d ended with %v, want a normal close", i, c.err)
			}
		case <-time.After(wait):
			b.Errorf("client %d: no close from the server within %v", i, wait)
		}
		_ = c.conn.Close() // the connection is finished either way
		<-c.done
	}
	deadline := time.Now().Add(wait)
	for h.hub.Conns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.hub.Conns(); n != 0 {
		b.Errorf("hub still has %d connections after every client closed", n)
	}
}

// checkGoroutines fails b when more goroutines run than before it started,
// allowing them a moment to finish.
func checkGoroutines(b *testing.B, before int) {
	deadline := time.Now().Add(wait)
	n := runtime.NumGoroutine()
	for n > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > before {
		buf := make([]byte, 1<<20)
		b.Errorf("%d goroutines outlive the benchmark (%d before, %d after):\n%s", n-before, before, n, buf[:runtime.Stack(buf, true)])
	}
}
