package ws_test

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/ws"
)

// sendBenchSenders is the number of connections sending at once.
const sendBenchSenders = 64

// BenchmarkSendAck measures a send through the gateway with the memory
// backend: sendBenchSenders real WebSocket clients, each in a room of its
// own, send one message after another, each waiting for the ack of the
// previous one (and reading its own message's delivery). It fails when a
// send is refused or goroutines outlive it.
func BenchmarkSendAck(b *testing.B) {
	goroutines := runtime.NumGoroutine()
	b.Cleanup(func() { checkGoroutines(b, goroutines) })

	h := start(b, ws.Config{FrameRate: 1e9, FrameBurst: 1 << 30})
	url := strings.Replace(h.srv.URL, "http", "ws", 1) + "/ws?user="
	dialer := websocket.Dialer{HandshakeTimeout: wait}
	conns := make([]*websocket.Conn, sendBenchSenders)
	for i := range conns {
		conn, _, err := dialer.Dial(url+fmt.Sprint("s", i), nil)
		if err != nil {
			b.Fatalf("sender %d: %v", i, err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		conns[i] = conn
		join := fmt.Sprintf(`{"type":"join","room":"r%d","history":0}`, i)
		if err := conn.WriteMessage(websocket.TextMessage, []byte(join)); err != nil {
			b.Fatal(err)
		}
		if err := readUntil(conn, []byte(`"type":"joined"`)); err != nil {
			b.Fatalf("sender %d join: %v", i, err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for i, conn := range conns {
		n := b.N / len(conns)
		if i < b.N%len(conns) {
			n++
		}
		wg.Go(func() {
			for k := range n {
				ref := fmt.Sprintf("m%d", k)
				send := fmt.Sprintf(`{"type":"send","room":"r%d","text":"hello, everyone: a message of typical length","ref":"%s"}`, i, ref)
				if err := conn.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
					errs <- err
					return
				}
				if err := readUntil(conn, []byte(`"type":"ack","ref":"`+ref+`"`)); err != nil {
					errs <- fmt.Errorf("sender %d send %s: %w", i, ref, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// readUntil reads frames from conn until one contains want; an error frame
// fails it.
func readUntil(conn *websocket.Conn, want []byte) error {
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		if bytes.Contains(data, want) {
			return nil
		}
		if bytes.Contains(data, []byte(`"type":"error"`)) {
			return fmt.Errorf("error frame: %s", data)
		}
	}
}
