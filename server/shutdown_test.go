package server_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
)

// TestShutdownClosesSocketsWhileHTTPLingers: a plain HTTP request whose
// body trickles in does not hold back the sockets' 1001 until the shutdown
// time is up; they are closed at once, and the request is cut off.
func TestShutdownClosesSocketsWhileHTTPLingers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{ShutdownTimeout: 20 * time.Second})
	base := srv.URL()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?user=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	// A request whose body never arrives in full keeps its connection
	// active for the HTTP server's shutdown.
	slow, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := fmt.Fprintf(slow, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the request is being read

	stopped := make(chan struct{})
	go func() { defer close(stopped); srv.Stop() }()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second)) // half the shutdown time
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("socket ended with %v, want 1001 while the HTTP request still runs", err)
		}
		break
	}
	_ = slow.Close() // the request ends; the shutdown can finish
	<-stopped
}
