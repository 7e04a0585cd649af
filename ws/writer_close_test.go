package ws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// startOne starts a gateway on a memory backend, dials one client and
// returns the gateway, the client and the server's Conn for it.
func startOne(t *testing.T) (*Gateway, *websocket.Conn, *Conn) {
	t.Helper()
	return startOneWith(t, Config{})
}

// startOneWith is startOne with the gateway's cfg (its Logger is set
// here).
func startOneWith(t *testing.T, cfg Config) (*Gateway, *websocket.Conn, *Conn) {
	t.Helper()
	g, cls, cs := startManyWith(t, cfg, 1)
	return g, cls[0], cs[0]
}

// startManyWith is startOneWith with n clients, users u0 to u<n-1>; the
// server's connections come in the clients' order.
func startManyWith(t *testing.T, cfg Config, n int) (*Gateway, []*websocket.Conn, []*Conn) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := memstore.New(memstore.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	hub := NewHub(log, 0)
	p, err := pipeline.New(pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: log},
		Delivery: pipeline.DeliveryConfig{Feed: be, Deliverer: hub, Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = log
	g, err := NewGateway(cfg, hub, p, be)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = p.Run(ctx) }()
	<-p.Running()
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	cls := make([]*websocket.Conn, n)
	cs := make([]*Conn, n)
	for i := range n {
		cl, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("%s/ws?user=u%d", strings.Replace(srv.URL, "http", "ws", 1), i), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		cls[i] = cl
		for deadline := time.Now().Add(5 * time.Second); cs[i] == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			for _, x := range hub.allConns() {
				if x.user == fmt.Sprintf("u%d", i) {
					cs[i] = x
				}
			}
		}
		if cs[i] == nil {
			t.Fatalf("connection %d did not register", i)
		}
	}
	return g, cls, cs
}

// TestWriterFinishesAfterLateClose: close marks the connection closing
// and then, finding a writer running, starts none. A writer that had
// already passed its check of done and then finds the queue empty must
// finish the connection itself, or the connection is never closed, its
// admission slot never released and Shutdown waits for it in vain. The
// test puts a connection in that state (closing, done still open, a writer
// running, nothing queued) and runs the writer.
func TestWriterFinishesAfterLateClose(t *testing.T) {
	g, cl, c := startOne(t)

	// close's first steps, as a concurrent writer may see them.
	c.mu.Lock()
	writing := c.startWriterLocked()
	c.mu.Unlock()
	if !writing {
		t.Fatal("a writer was already running")
	}
	c.closeCode, c.closeReason = websocket.CloseNormalClosure, "bye"
	c.closing.Store(true)
	ran := make(chan struct{})
	go func() { defer close(ran); c.writer() }()

	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := cl.ReadMessage()
		var ce *websocket.CloseError
		if err == nil {
			continue
		}
		if ok := errors.As(err, &ce); !ok || ce.Code != websocket.CloseNormalClosure {
			t.Fatalf("read ended with %v, want the close frame 1000 (the writer returned without finishing)", err)
		}
		break
	}
	cl.Close()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not return")
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := g.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v (the connection was never finished)", err)
	}
}

// TestPingAfterShutdownKeepsNoDeadline: a ping read while Shutdown is
// under way does not push the read deadline out again, so the connection
// closes with 1001 at once, not after PongWait. (Shutdown's flag is set
// alone here, as if its deadline had been overtaken by the ping's.)
func TestPingAfterShutdownKeepsNoDeadline(t *testing.T) {
	g, cl, _ := startOne(t)
	g.shutting.Store(true)
	if err := cl.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := cl.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("read ended with %v, want 1001 (the ping pushed the deadline out)", err)
		}
		return
	}
}

// TestStuckWriteDropsConnection: a client that stops reading while the
// server writes to it blocks the server's write once the sockets' buffers
// are full. Writes carry no deadline of their own: the gateway's pinger
// must cut a write that lasts longer than WriteWait and drop the
// connection, whether its reader still runs or has ended (the client shut
// its side down: the connection leaves the hub at once, but its writer is
// still stuck), and not count it as slow (its queue was within budget).
func TestStuckWriteDropsConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		// shuts makes the client shut down its side of the TCP
		// connection once the write is stuck, which ends the server's
		// reader at once (a close frame would wait for the writer: the
		// reader answers it).
		shuts bool
	}{
		{name: "reader running"},
		{name: "reader ended", shuts: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const writeWait = 200 * time.Millisecond
			g, cl, c := startOneWith(t, Config{
				WriteWait: writeWait,
				// No ping or silence ends the connection within the test.
				PongWait: 10 * time.Minute, PingPeriod: 9 * time.Minute,
				SendQueue: 1024, SendQueueBytes: 64 << 20,
			})
			tcp, ok := cl.NetConn().(*net.TCPConn)
			if !ok {
				t.Fatalf("connection is a %T, not TCP", cl.NetConn())
			}
			if err := tcp.SetReadBuffer(64 << 10); err != nil {
				t.Fatal(err)
			}
			// 16 MiB: more than the two sockets' buffers hold, so the
			// writer blocks; one frame a batch (MaxBatchBytes).
			frame := []byte(`{"type":"message","text":"` + strings.Repeat("x", 64<<10-64) + `"}`)
			for range 256 {
				c.enqueue(frame)
			}
			waitUntil(t, "a write to block", func() bool {
				since := c.writeSince.Load()
				return since != 0 && time.Now().UnixNano()-since > int64(writeWait/2)
			})
			if tc.shuts {
				if err := tcp.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the connection to leave the hub", func() bool { return g.hub.Conns() == 0 })
			}
			waitUntil(t, "the connection to be finished", func() bool {
				g.liveMu.Lock()
				defer g.liveMu.Unlock()
				return len(g.live) == 0
			})
			if n := g.hub.SlowDisconnects(); n != 0 {
				t.Errorf("%d slow disconnects, want 0: the write was cut, the queue was within budget", n)
			}
			// The server has dropped the TCP connection: reading what the
			// buffers hold ends in an error, not in waiting.
			_ = tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.Copy(io.Discard, tcp)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the client's connection is still open")
			}
		})
	}
}

// waitUntil polls cond until it holds, failing after 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
