package ws_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/ws"
)

// idleClient is a bare TCP client that speaks just enough WebSocket to
// open a connection and join a room, then holds it without a goroutine,
// buffer or timer of its own, so that the memory an idle connection costs
// in this process is the server's.
type idleClient struct{ conn net.Conn }

// dialIdle opens a WebSocket to addr as user, joins room and waits for the
// joined frame.
func dialIdle(addr, user, room string) (*idleClient, error) {
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(wait))
	req := "GET /ws?user=" + user + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	// gorilla refuses data sent before the handshake's answer.
	if _, err := conn.Write(clientFrame([]byte(`{"type":"join","room":"` + room + `","history":0}`))); err != nil {
		conn.Close()
		return nil, fmt.Errorf("join: %w", err)
	}
	payload, err := serverFrame(br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("joined: %w", err)
	}
	if !bytes.Contains(payload, []byte(`"type":"joined"`)) {
		conn.Close()
		return nil, fmt.Errorf("joined: got %s", payload)
	}
	_ = conn.SetDeadline(time.Time{})
	return &idleClient{conn: conn}, nil
}

// clientFrame encodes a masked text frame of fewer than 126 bytes.
func clientFrame(payload []byte) []byte {
	var mask [4]byte
	_, _ = rand.Read(mask[:]) // crypto/rand does not fail
	f := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// serverFrame reads one unmasked, unfragmented server frame's payload.
func serverFrame(r *bufio.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return p, err
}

// inUse is the memory the runtime holds for live objects and for
// goroutine stacks, after a collection.
func inUse() (heap, stack int64) {
	runtime.GC()
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), int64(m.StackInuse)
}

// writeProfiles writes the heap (in use) and goroutine profiles into dir.
func writeProfiles(b *testing.B, dir string) {
	for _, name := range []string{"heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, "idle-"+name+".pprof"))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleConn measures what one idle connection costs the server:
// b.N connections, ten per room, are opened, joined and held; the heap and
// stack bytes in use grow by B/conn each (stack-B/conn of it in goroutine
// stacks), and goroutines/conn counts the
// goroutines each holds. The clients are bare sockets, so the figures are
// the server's (plus a client socket's few hundred bytes).
//
//	go test -run '^$' -bench IdleConn -benchtime 5000x ./ws/
//
// With CHATSTREAM_IDLE_PROFILES=dir it also writes the heap and goroutine
// profiles taken while the connections are held into dir.
func BenchmarkIdleConn(b *testing.B) {
	h := start(b, ws.Config{})
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	b.ReportAllocs()
	goroutines := runtime.NumGoroutine()
	heap0, stack0 := inUse()
	b.ResetTimer()
	clients := make([]*idleClient, 0, b.N)
	for i := range b.N {
		c, err := dialIdle(addr, fmt.Sprintf("u%d", i), fmt.Sprintf("room-%d", i/10))
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	b.StopTimer()
	// Let every handshake's transient state become garbage.
	time.Sleep(100 * time.Millisecond)
	heap, stack := inUse()
	b.ReportMetric(float64(heap-heap0+stack-stack0)/float64(b.N), "B/conn")
	b.ReportMetric(float64(stack-stack0)/float64(b.N), "stack-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/float64(b.N), "goroutines/conn")
	if dir := os.Getenv("CHATSTREAM_IDLE_PROFILES"); dir != "" {
		writeProfiles(b, dir)
	}
	if got := h.hub.Conns(); got != b.N {
		b.Fatalf("hub holds %d connections, want %d", got, b.N)
	}
	for _, c := range clients {
		c.conn.Close()
	}
}
