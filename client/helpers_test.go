package client_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// wait bounds every expected event; nothing here is a timing assertion.
const wait = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer runs a memory-backed server with the frame limit out of the
// way (tests that need it set their own).
func startServer(t *testing.T, cfg server.Config) *testserver.Instance {
	t.Helper()
	if cfg.WS.FrameRate == 0 {
		cfg.WS = ws.Config{FrameRate: 1e6, FrameBurst: 1e6}
	}
	cfg.Logger = quiet
	return testserver.Start(t, cfg)
}

// config is a client configuration for tests: quick reconnects, no frame
// limit of its own.
func config(url, user string) client.Config {
	return client.Config{
		URL: url, User: user, Logger: quiet,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		FrameRate: 1e6, FrameBurst: 1000, RetryWait: 50 * time.Millisecond,
	}
}

// dial connects a client that is closed when the test ends.
func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	// Dial's ctx bounds the client's life; the test's cleanup closes it.
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", cfg.URL, cfg.User, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// join joins room or fails the test.
func join(t *testing.T, c *client.Client, room string, opts client.JoinOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Join(ctx, room, opts); err != nil {
		t.Fatalf("join %s: %v", room, err)
	}
}

// send sends text and returns its ack or fails the test.
func send(t *testing.T, c *client.Client, room, text string) client.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := c.Send(ctx, room, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return ack
}

// messages returns the next n messages of c, failing on any other event.
func messages(t *testing.T, c *client.Client, n int) []client.Message {
	t.Helper()
	var out []client.Message
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed after %d of %d messages (err %v)", len(out), n, c.Err())
			}
			if ev.Type != client.EventMessage {
				t.Fatalf("got %v event in %s, want messages", ev.Type, ev.Room)
			}
			out = append(out, ev.Message)
		case <-timeout:
			t.Fatalf("got %d of %d messages: %v", len(out), n, texts(out))
		}
	}
	return out
}

func texts(ms []client.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Text
	}
	return out
}

// clientGoroutines returns the stacks of the goroutines running code of
// package client.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "chatstream/chatstream/client.(*") {
			out = append(out, g)
		}
	}
	return out
}

// noClientGoroutines fails the test unless every goroutine of package
// client ends within wait. Tests that call it do not run in parallel.
func noClientGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := clientGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of package client still running:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy is a TCP proxy in front of a server that records what clients
// write (the handshake and every text frame) and can drop traffic and cut
// its connections, to lose frames at a chosen moment.
type proxy struct {
	ln     net.Listener
	target string

	// wmu serialises writes to client connections (the server's bytes and
	// injected close frames).
	wmu sync.Mutex
	// mu guards everything below.
	mu   sync.Mutex
	open []net.Conn
	// dropToServer holds the client connections whose text frames are
	// dropped, dropToClient those that get no byte from the server; set
	// fills them with the connections open then, so a reconnect is clean.
	dropToServer, dropToClient map[net.Conn]bool
	heads                      []string
	frames                     []proxyFrame
	// dropped holds the server's bytes dropped on their way to clients.
	dropped []byte
}

// proxyFrame is a text frame a client wrote.
type proxyFrame struct {
	Type    string `json:"type"`
	Room    string `json:"room"`
	Text    string `json:"text"`
	Ref     string `json:"ref"`
	Since   string `json:"since"`
	dropped bool
}

// startProxy proxies to target (host:port) until the test ends.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close() // ends accept
		p.cut()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, c, up)
			p.mu.Unlock()
			wg.Go(func() { p.toServer(c, up) })
			wg.Go(func() { p.toClient(c, up) })
		}
	})
	return p
}

// URL is the proxy's base URL.
func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		_ = c.Close() // ends both pumps
	}
	p.open = nil
}

// set makes the connections open now drop what the flags say.
func (p *proxy) set(toServer, toClient bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropToServer, p.dropToClient = map[net.Conn]bool{}, map[net.Conn]bool{}
	for i := 0; i < len(p.open); i += 2 { // client, upstream
		p.dropToServer[p.open[i]] = toServer
		p.dropToClient[p.open[i]] = toClient
	}
}

// droppedToClient returns a copy of the server's bytes dropped so far on
// their way to clients.
func (p *proxy) droppedToClient() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.dropped)
}

// sends returns the send frames clients wrote with text, dropped or not.
func (p *proxy) sends(text string) []proxyFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []proxyFrame
	for _, f := range p.frames {
		if f.Type == "send" && f.Text == text {
			out = append(out, f)
		}
	}
	return out
}

func (p *proxy) handshakes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.heads...)
}

// toServer copies the handshake, then one client frame at a time.
func (p *proxy) toServer(from, to net.Conn) {
	defer to.Close()
	r := bufio.NewReader(from)
	var head bytes.Buffer
	for !bytes.HasSuffix(head.Bytes(), []byte("\r\n\r\n")) {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		head.Write(line)
	}
	p.mu.Lock()
	p.heads = append(p.heads, head.String())
	p.mu.Unlock()
	if _, err := to.Write(head.Bytes()); err != nil {
		return
	}
	for {
		raw, opcode, payload, err := readClientFrame(r)
		if err != nil {
			return
		}
		drop := false
		if opcode == 1 {
			var f proxyFrame
			_ = json.Unmarshal(payload, &f) // every frame of the client is JSON
			p.mu.Lock()
			drop = p.dropToServer[from]
			f.dropped = drop
			p.frames = append(p.frames, f)
			p.mu.Unlock()
		}
		if drop {
			continue
		}
		if _, err := to.Write(raw); err != nil {
			return
		}
	}
}

// toClient copies the server's bytes to the client connection c.
func (p *proxy) toClient(c, up net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		drop := p.dropToClient[c]
		if drop {
			p.dropped = append(p.dropped, buf[:n]...)
		}
		p.mu.Unlock()
		if drop {
			continue
		}
		p.wmu.Lock()
		_, err = c.Write(buf[:n])
		p.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// closeClients sends every client a server close frame with code, as a
// front end or a server with authentication would, then cuts the
// connections. Call it while no server frame is in flight.
func (p *proxy) closeClients(code int, reason string) {
	p.mu.Lock()
	clients := make([]net.Conn, 0, len(p.open)/2)
	for i := 0; i < len(p.open); i += 2 {
		clients = append(clients, p.open[i])
	}
	p.mu.Unlock()
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	payload = append(payload, reason...)
	frame := append([]byte{0x88, byte(len(payload))}, payload...) // FIN, close; short and unmasked
	p.wmu.Lock()
	for _, c := range clients {
		_, _ = c.Write(frame) // the cut follows either way
	}
	p.wmu.Unlock()
	p.cut()
}

// readClientFrame reads one masked WebSocket frame (RFC 6455 §5.2) and
// returns its bytes as read, its opcode and its unmasked payload.
func readClientFrame(r *bufio.Reader) (raw []byte, opcode byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, nil, err
	}
	raw = append(raw, hdr[:]...)
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, 0, nil, err
		}
		raw = append(raw, ext[:]...)
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, 0, nil, err
		}
		raw = append(raw, ext[:]...)
		n = binary.BigEndian.Uint64(ext[:])
	}
	if hdr[1]&0x80 == 0 || n > 1<<20 {
		return nil, 0, nil, errors.New("not a masked client frame of a sane size")
	}
	var mask [4]byte
	if _, err := io.ReadFull(r, mask[:]); err != nil {
		return nil, 0, nil, err
	}
	raw = append(raw, mask[:]...)
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, 0, nil, err
	}
	raw = append(raw, body...)
	payload = make([]byte, n)
	for i := range body {
		payload[i] = body[i] ^ mask[i%4]
	}
	return raw, hdr[0] & 0x0f, payload, nil
}
