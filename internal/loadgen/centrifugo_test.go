package loadgen_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge"

	"github.com/chatstream/chatstream/internal/loadgen"
)

// centrifugeServer is a Centrifuge node, the library Centrifugo is built
// on (the version Centrifugo v6.9.1 uses), serving its WebSocket transport
// on a loopback address. Anonymous clients may connect, subscribe and
// publish; publications to a channel whose name ends in refuseSuffix are
// refused with permission denied (103). The first sender's connect is
// answered only after slowConnect, so that the receivers, connected
// before it, must answer pings during the connect phase.
type centrifugeServer struct {
	URL string
	// published counts the publications the server accepted.
	published atomic.Int64
}

// pingInterval is short so that every run sees several pings to answer,
// one of them during the connect phase (slowConnect).
const (
	pingInterval = 500 * time.Millisecond
	pongTimeout  = 400 * time.Millisecond
	slowConnect  = 2 * (pingInterval + pongTimeout)
)

func startCentrifuge(t *testing.T, refuseSuffix string) *centrifugeServer {
	t.Helper()
	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelNone})
	if err != nil {
		t.Fatal(err)
	}
	s := &centrifugeServer{}
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		if strings.HasSuffix(e.Name, "-s0") {
			time.Sleep(slowConnect)
		}
		return centrifuge.ConnectReply{
			Credentials:    &centrifuge.Credentials{},
			PingPongConfig: &centrifuge.PingPongConfig{PingInterval: pingInterval, PongTimeout: pongTimeout},
		}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{}, nil)
		})
		c.OnPublish(func(e centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			if refuseSuffix != "" && strings.HasSuffix(e.Channel, refuseSuffix) {
				cb(centrifuge.PublishReply{}, centrifuge.ErrorPermissionDenied)
				return
			}
			s.published.Add(1)
			cb(centrifuge.PublishReply{}, nil)
		})
	})
	if err := node.Run(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin: func(*http.Request) bool { return true },
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx) // the test is over; a slow shutdown only delays it
	})
	s.URL = srv.URL
	return s
}

// centrifugoConfig is a small run in Centrifugo's protocol that lasts
// several ping intervals: two senders in two rooms each, two receivers in
// each room.
func centrifugoConfig(url string) loadgen.Config {
	return loadgen.Config{
		URLs: []string{url}, Protocol: loadgen.ProtocolCentrifugo,
		Rooms: 4, Conns: 8, Senders: 2, Rate: 200,
		Warmup: 300 * time.Millisecond, Duration: 1500 * time.Millisecond, Drain: 2 * time.Second,
	}
}

// TestCentrifugoRun: against a real Centrifuge server, every publish is
// answered, every acked message reaches every subscriber of its channel
// once, and the server's pings are answered, during the connect phase too
// (unanswered, the server closes the connections within the run).
func TestCentrifugoRun(t *testing.T) {
	srv := startCentrifuge(t, "")
	res := run(t, centrifugoConfig(srv.URL))
	checkComplete(t, res, 2)
	// The warm-up's publishes count on the server, not in the result.
	if got, want := srv.published.Load(), res.WarmupSent+res.Sent; got != want {
		t.Errorf("server got %d publishes, want %d (warm-up and measured)", got, want)
	}
	if res.Config.Protocol != loadgen.ProtocolCentrifugo {
		t.Errorf("result's protocol %q, want %q", res.Config.Protocol, loadgen.ProtocolCentrifugo)
	}
	if len(res.Refused) != 0 {
		t.Errorf("refused %v, want no codes: chatstream's are not Centrifugo's", res.Refused)
	}
}

// TestCentrifugoRefusals: a refused publish is counted under Centrifugo's
// error code, not as acked or unanswered, and owes no delivery.
func TestCentrifugoRefusals(t *testing.T) {
	srv := startCentrifuge(t, "-1") // the second sender's first room of two
	res := run(t, centrifugoConfig(srv.URL))
	refused := res.Refused["103"]
	// One room of four is refused; each sender sends to its rooms in turn.
	if refused < res.Sent/4-2 || refused > res.Sent/4+2 || res.Acked+refused != res.Sent || res.Unanswered != 0 {
		t.Errorf("sent %d, acked %d, refused %v, unanswered %d; want a quarter refused with 103, the rest acked",
			res.Sent, res.Acked, res.Refused, res.Unanswered)
	}
	if want := res.Acked * 2; res.Expected != want || res.Deliveries != want || res.LostDeliveries != 0 {
		t.Errorf("deliveries %d, expected %d, lost %d; want %d, %d, 0", res.Deliveries, res.Expected, res.LostDeliveries, want, want)
	}
}
