package ws_test

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/ws"
)

// writerGoroutines counts the goroutines running a connection's writer.
func writerGoroutines(t *testing.T) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), "ws.(*Conn).writer(")
}

// awaitWriters waits until want writer goroutines run, failing after wait.
func awaitWriters(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := writerGoroutines(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connection writers run, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle connection holds no writer goroutine: one runs while there is
// something to write and ends when the queue is empty, for every
// connection, after joins and after deliveries alike.
func TestIdleConnectionHoldsNoWriter(t *testing.T) {
	h := start(t, ws.Config{})
	const n = 20
	clients := make([]*idleClient, 0, n)
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	for i := range n {
		c, err := dialIdle(addr, fmt.Sprintf("u%d", i), "idle")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.conn.Close() })
		clients = append(clients, c)
	}
	awaitWriters(t, 0)

	talker := h.dial(t, "talker")
	join(t, talker, "idle", 0)
	for i := range 5 {
		say(t, talker, "idle", "hello", fmt.Sprintf("r%d", i))
	}
	collect(t, talker, "idle", 5) // delivered here means queued to everyone
	awaitWriters(t, 0)
	if got := h.hub.Conns(); got != n+1 {
		t.Fatalf("hub holds %d connections, want %d", got, n+1)
	}
}

// The gateway pings idle connections: a client that answers pings (as
// every WebSocket client does) stays connected through many pong waits
// without sending anything, and one that never reads is dropped after
// one.
func TestPingsKeepIdleClientsAlive(t *testing.T) {
	// Pings go out well before the pong wait ends, so that a loaded
	// machine's slow pongs still arrive in time.
	const pongWait = 600 * time.Millisecond
	h := start(t, ws.Config{PongWait: pongWait, PingPeriod: pongWait / 3})
	addr := strings.TrimPrefix(h.srv.URL, "http://")

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?user=quiet", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pings atomic.Int64
	conn.SetPingHandler(func(data string) error {
		pings.Add(1)
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	deaf, err := dialIdle(addr, "deaf", "idle") // never reads: never answers a ping
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.conn.Close()

	select {
	case err := <-readErr:
		t.Fatalf("idle client answering pings was disconnected: %v", err)
	case <-time.After(5 * pongWait):
	}
	if got := pings.Load(); got < 8 {
		t.Fatalf("client got %d pings in %v, want at least 8", got, 5*pongWait)
	}
	// Only the client that answers is left.
	deadline := time.Now().Add(wait)
	for h.hub.Conns() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("hub holds %d connections, want only the one answering pings", h.hub.Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPartialMessageBounded: a client that sends the first frames of a
// message and then only pings, keeping the socket busy but never finishing
// the message, is dropped about PongWait after the message began: pings
// between a message's frames do not extend the read deadline, so a
// partly read message cannot hold its buffer for ever.
func TestPartialMessageBounded(t *testing.T) {
	const pongWait = 400 * time.Millisecond
	h := start(t, ws.Config{PongWait: pongWait, PingPeriod: pongWait / 3})
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?user=slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	w, err := conn.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	// More than the client's write buffer: the first frames go out, the
	// message stays open.
	if _, err := w.Write([]byte(`{"type":"say","room":"r","text":"` + strings.Repeat("x", 16<<10))); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	pinging := time.NewTicker(pongWait / 8)
	defer pinging.Stop()
	for {
		select {
		case <-readErr:
			if d := time.Since(began); d < pongWait/2 {
				t.Fatalf("dropped %v after the message began, before PongWait (%v)", d, pongWait)
			}
			return
		case <-pinging.C:
			if time.Since(began) > 10*pongWait {
				t.Fatalf("still connected %v after a message began that never ended, while pinging", time.Since(began))
			}
			_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
		}
	}
}
