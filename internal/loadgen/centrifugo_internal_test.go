package loadgen

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestCentrifugoPingAfterReply: a ping batched in the same message after
// the reply a connecting client waits for is answered, and what follows
// the reply's message is left for the next read.
func TestCentrifugoPingAfterReply(t *testing.T) {
	answered := make(chan string, 1)
	url := frameServer(t, func(ws *websocket.Conn) {
		if _, _, err := ws.ReadMessage(); err != nil { // the connect
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`+"\n{}"))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"error":{"code":103,"message":"permission denied"}}`))
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, _ := ws.ReadMessage()
		answered <- string(msg)
		_, _, _ = ws.ReadMessage() // until the client closes
	})
	ws, _ := dialFrames(t, url)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`)); err != nil {
		t.Fatal(err)
	}
	if err := awaitCentrifugoReply(ws, 1); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if got := <-answered; got != "{}" {
		t.Fatalf("server got %q after the reply, want the ping's answer {}", got)
	}
	err := awaitCentrifugoReply(ws, 2)
	if err == nil || err.Error() != "server answered 103: permission denied" {
		t.Fatalf("second command: %v, want the server's 103", err)
	}
}
