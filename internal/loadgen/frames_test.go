package loadgen

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frameServer serves one WebSocket connection with serve; its upgrader
// writes frames of at most 512 bytes, so longer messages are fragmented.
func frameServer(t *testing.T, serve func(ws *websocket.Conn)) string {
	t.Helper()
	up := websocket.Upgrader{WriteBufferSize: 512}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		serve(ws)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
}

// dialFrames dials url with the generator's dialer and returns the
// connection and its frameConn.
func dialFrames(t *testing.T, url string) (*websocket.Conn, *frameConn) {
	t.Helper()
	d := websocket.Dialer{NetDialContext: frameDialer(&net.Dialer{Timeout: JoinTimeout}), HandshakeTimeout: JoinTimeout}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	fc, ok := ws.NetConn().(*frameConn)
	if !ok {
		t.Fatalf("connection is a %T, not a *frameConn", ws.NetConn())
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second)) // a broken reader fails instead of hanging
	return ws, fc
}

// TestFrameConnMessages reads, without the websocket library, what a
// server writes at once after the upgrade and later: every length
// encoding, fragmented messages, pings between fragments' messages and a
// close frame with its code.
func TestFrameConnMessages(t *testing.T) {
	var want [][]byte
	for _, n := range []int{1, 125, 126, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 70000, 3} {
		want = append(want, bytes.Repeat([]byte{byte('a' + n%26)}, n))
	}
	pongs := make(chan string, 4)
	url := frameServer(t, func(ws *websocket.Conn) {
		ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
		go func() { // pongs are read, and the reply to the close frame
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
			}
		}()
		for i, m := range want {
			if i == 4 {
				_ = ws.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second))
			}
			if i == 6 {
				time.Sleep(20 * time.Millisecond) // the reader waits on an empty socket
			}
			if err := ws.WriteMessage(websocket.TextMessage, m); err != nil {
				return
			}
		}
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
		time.Sleep(100 * time.Millisecond) // for the client's pong to arrive
	})
	ws, fc := dialFrames(t, url)
	var got [][]byte
	err := fc.messages(ws, ReadLimit, func(msg []byte) bool {
		got = append(got, bytes.Clone(msg))
		return true
	})
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "bye" {
		t.Fatalf("messages ended with %v, want close 4001 bye", err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("message %d: %d bytes %.10q…, want %d bytes %.10q…", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
	select {
	case p := <-pongs:
		if p != "p1" {
			t.Errorf("pong %q, want p1", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("the server's ping was not answered")
	}
}

// TestFrameConnResumes stops at a message and, called again, goes on with
// the next one, whether it was read already or not.
func TestFrameConnResumes(t *testing.T) {
	next := make(chan struct{})
	url := frameServer(t, func(ws *websocket.Conn) {
		for _, m := range []string{"one\ntwo", "three"} { // two messages, likely one read
			_ = ws.WriteMessage(websocket.TextMessage, []byte(m))
		}
		<-next
		_ = ws.WriteMessage(websocket.TextMessage, []byte("four"))
		_, _, _ = ws.ReadMessage() // until the client closes
	})
	ws, fc := dialFrames(t, url)
	var got []string
	take := func(n int) func([]byte) bool {
		return func(msg []byte) bool {
			got = append(got, string(msg))
			return len(got) < n
		}
	}
	for n := 1; n <= 3; n++ {
		if n == 3 {
			close(next)
		}
		if err := fc.messages(ws, ReadLimit, take(n)); err != nil {
			t.Fatalf("call %d: %v", n, err)
		}
	}
	if want := "one\ntwo|three|four"; strings.Join(got, "|") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, "|"), want)
	}
}

// TestFrameConnLimit ends the read at a message over the limit, whole or
// fragmented, with errLimit.
func TestFrameConnLimit(t *testing.T) {
	for _, c := range []struct{ size, limit int }{{300, 256}, {2000, 1000}} { // one frame; fragments under the limit
		url := frameServer(t, func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.TextMessage, make([]byte, c.size))
			_, _, _ = ws.ReadMessage()
		})
		ws, fc := dialFrames(t, url)
		err := fc.messages(ws, c.limit, func([]byte) bool { t.Error("message handed out"); return true })
		if !errors.Is(err, errLimit) {
			t.Errorf("%d bytes, limit %d: %v, want errLimit", c.size, c.limit, err)
		}
	}
}

// TestFrameConnDeadline ends a read that waits past the connection's
// read deadline with a timeout.
func TestFrameConnDeadline(t *testing.T) {
	url := frameServer(t, func(ws *websocket.Conn) { _, _, _ = ws.ReadMessage() })
	ws, fc := dialFrames(t, url)
	_ = ws.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	err := fc.messages(ws, ReadLimit, func([]byte) bool { return true })
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
}

// TestFrameConnRefused keeps a refused handshake's reason readable: the
// body after the response's header reaches the websocket library. The hint
// to chatstream's flags is given only where the server is chatstream.
func TestFrameConnRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "too many connections from 127.0.0.1", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{NetDialContext: frameDialer(&net.Dialer{Timeout: JoinTimeout})}
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for _, chatstream := range []bool{true, false} {
		_, resp, err := d.DialContext(context.Background(), url+"/ws", nil)
		if err == nil {
			t.Fatal("handshake succeeded")
		}
		msg := dialError(url, resp, err, chatstream).Error()
		if !strings.Contains(msg, "too many connections from 127.0.0.1") || strings.Contains(msg, "--max-conns-per-ip") != chatstream {
			t.Errorf("dial error %q (chatstream server %v) lacks the server's reason, or has the hint to chatstream's flags where it should not or lacks it where it should", msg, chatstream)
		}
	}
}

// TestFrameConnHeaderSplit hands the websocket library exactly the
// response's header however the header's end is split between reads.
func TestFrameConnHeaderSplit(t *testing.T) {
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
	frames := "\x81\x02hi"
	for cut := 1; cut < len(resp)+len(frames); cut++ {
		client, server := net.Pipe()
		fc := &frameConn{Conn: client, buf: make([]byte, messageBufferSize)}
		all := resp + frames
		go func() {
			_, _ = server.Write([]byte(all[:cut]))
			_, _ = server.Write([]byte(all[cut:]))
		}()
		var got []byte
		p := make([]byte, 7)
		for fc.header < len(headerEnd) {
			n, err := fc.Read(p)
			if err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			got = append(got, p[:n]...)
		}
		if string(got) != resp {
			t.Errorf("cut %d: library got %q, want the header alone", cut, got)
		}
		_ = client.Close()
		_ = server.Close()
	}
}
