package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/ws"
)

// rawClient reads a gorilla connection in a goroutine of its own, counting
// pongs and passing server frames on; the test writes to conn itself.
type rawClient struct {
	conn   *websocket.Conn
	frames chan wstest.Frame
	pongs  atomic.Int64
	// err ended the read loop; valid once frames is closed.
	err error
}

func newRawClient(t *testing.T, h *harness, user string) *rawClient {
	t.Helper()
	return newRawClientAt(t, h.srv.URL, user)
}

// newRawClientAt is newRawClient for the server at base (http://host:port).
func newRawClientAt(t *testing.T, base, user string) *rawClient {
	t.Helper()
	c := &rawClient{conn: dialRawAt(t, base, user), frames: make(chan wstest.Frame, 1<<14)}
	c.conn.SetPongHandler(func(string) error {
		c.pongs.Add(1)
		return nil
	})
	go func() {
		defer close(c.frames)
		for {
			_, data, err := c.conn.ReadMessage()
			if err != nil {
				c.err = err
				return
			}
			for _, line := range strings.Split(string(data), "\n") {
				var f wstest.Frame
				if err := json.Unmarshal([]byte(line), &f); err != nil {
					f.Type = "undecodable"
				}
				f.Raw = line
				c.frames <- f
			}
		}
	}()
	return c
}

// until returns the frames received up to and including the first for
// which match is true.
func (c *rawClient) until(t *testing.T, match func(wstest.Frame) bool) []wstest.Frame {
	t.Helper()
	var out []wstest.Frame
	timeout := time.After(wait)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				t.Fatalf("connection ended after %d frames: %v", len(out), c.err)
			}
			out = append(out, f)
			if match(f) {
				return out
			}
		case <-timeout:
			t.Fatalf("no matching frame among %d", len(out))
		}
	}
}

// write sends v as a JSON text frame.
func (c *rawClient) write(t *testing.T, v any) {
	t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

// closesAfter reads the frames until the connection ends and checks that
// the answers among them (ack or error, as type:ref) are want and that it
// closed with code and reason; any frame other than an answer or presence
// fails the test.
func (c *rawClient) closesAfter(t *testing.T, want []string, code int, reason string) {
	t.Helper()
	var answers []string
	for f := range c.frames { // until the connection ends
		switch f.Type {
		case "ack", "error":
			answers = append(answers, f.Type+":"+f.Ref)
		case ws.TypePresence:
		default:
			t.Fatalf("got %s, want only the answers %q and the close", f.Raw, want)
		}
	}
	if !slices.Equal(answers, want) {
		t.Fatalf("answers %q, want %q", answers, want)
	}
	var ce *websocket.CloseError
	if !errors.As(c.err, &ce) || ce.Code != code || ce.Text != reason {
		t.Fatalf("the connection ended with %v, want close %d %q after the answers", c.err, code, reason)
	}
}

// TestFrameLimiterBoundsWork: every kind of client frame counts against
// the connection's rate, those beyond it are discarded without an answer
// (pings get no pong), and the whole flood gets at most one rate_limited
// error per second, without ref because the frames are not decoded.
func TestFrameLimiterBoundsWork(t *testing.T) {
	t.Parallel()
	const (
		rate  = 5
		burst = 2
		flood = 40
	)
	cases := []struct {
		name string
		send func(c *websocket.Conn, i int) error
		// answers counts the answers to the flood's frames among the
		// frames received, with pongs the client counted.
		answers func(fs []wstest.Frame, pongs int64) int
	}{
		{
			name: "text frames",
			send: func(c *websocket.Conn, i int) error {
				return c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"join","room":"r%d","history":0,"ref":"x%d"}`, i, i))
			},
			answers: countFrames(func(f wstest.Frame) bool { return f.Type == "joined" }),
		},
		{
			name: "binary frames",
			send: func(c *websocket.Conn, i int) error {
				return c.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"leave"}`))
			},
			answers: countFrames(func(f wstest.Frame) bool { return f.Code == ws.CodeBadFrame }),
		},
		{
			name:    "invalid frames",
			send:    func(c *websocket.Conn, i int) error { return c.WriteMessage(websocket.TextMessage, []byte(`not json`)) },
			answers: countFrames(func(f wstest.Frame) bool { return f.Code == ws.CodeBadFrame }),
		},
		{
			name: "pings",
			send: func(c *websocket.Conn, i int) error {
				return c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(wait))
			},
			answers: func(_ []wstest.Frame, pongs int64) int { return int(pongs) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, ws.Config{FrameRate: rate, FrameBurst: burst, FloodFactor: 1000})
			c := newRawClient(t, h, "flooder")
			began := time.Now()
			for i := range flood {
				if err := tc.send(c.conn, i); err != nil {
					t.Fatal(err)
				}
			}
			elapsed := time.Since(began)
			// Once the bucket is full again, a marker frame is handled and
			// answered after every answer to the flood (replies keep the
			// order of frames).
			time.Sleep(time.Duration(float64(burst)/rate*float64(time.Second)) + 100*time.Millisecond)
			if err := c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"marker","history":0,"ref":"marker"}`)); err != nil {
				t.Fatal(err)
			}
			fs := c.until(t, func(f wstest.Frame) bool { return f.Ref == "marker" })
			fs = fs[:len(fs)-1]
			admitted := burst + int(math.Ceil(rate*elapsed.Seconds()))
			if got := tc.answers(fs, c.pongs.Load()); got > admitted {
				t.Errorf("%d of %d frames sent in %s were answered, want at most %d", got, flood, elapsed, admitted)
			}
			limited := 0
			for _, f := range fs {
				if f.Code != pipeline.CodeRateLimited {
					continue
				}
				limited++
				if f.Ref != "" || f.Room != "" || f.Retry <= 0 {
					t.Errorf("rate_limited = %s, want no ref or room and retry_after_ms", f.Raw)
				}
			}
			if most := 1 + int(elapsed/time.Second); limited < 1 || limited > most {
				t.Errorf("%d rate_limited answers to a flood of %s, want 1 to %d", limited, elapsed, most)
			}
			if h.hub.FloodDisconnects() != 0 {
				t.Error("closed for flooding under a high flood factor")
			}
		})
	}
}

func countFrames(match func(wstest.Frame) bool) func([]wstest.Frame, int64) int {
	return func(fs []wstest.Frame, _ int64) int {
		n := 0
		for _, f := range fs {
			if match(f) {
				n++
			}
		}
		return n
	}
}

// TestFloodCloses1008: a connection that sends far more frames than its
// rate, of any kind, is closed with 1008 and counted, while one that keeps
// to its rate is not.
func TestFloodCloses1008(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		send func(c *websocket.Conn) error
	}{
		{"text frames", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte(`{"type":"leave","room":"lobby"}`))
		}},
		{"binary frames", func(c *websocket.Conn) error { return c.WriteMessage(websocket.BinaryMessage, []byte{0}) }},
		{"pings", func(c *websocket.Conn) error {
			return c.WriteControl(websocket.PingMessage, nil, time.Now().Add(wait))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The limiter admits 3 + 1×1 frames in the window (the calm
			// client's join and send among them); a flood is more than
			// twice that.
			h := start(t, ws.Config{FrameRate: 1, FrameBurst: 3, FloodFactor: 2, FloodWindow: time.Second})
			calm := h.dial(t, "calm")
			join(t, calm, "lobby", 0)
			c := newRawClient(t, h, "flooder")
			for range 200 {
				if tc.send(c.conn) != nil {
					break // closed already
				}
			}
			for range c.frames {
			}
			var ce *websocket.CloseError
			if !errors.As(c.err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "flooding") {
				t.Fatalf("flooder ended with %v, want close 1008 for flooding", c.err)
			}
			if got := h.hub.FloodDisconnects(); got != 1 {
				t.Errorf("flood disconnects = %d, want 1", got)
			}
			say(t, calm, "lobby", "still here", "c1")
		})
	}
}

// TestConfigRefused: budgets that cannot work are refused before any
// connection is made.
func TestConfigRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  ws.Config
	}{
		{"queue smaller than two pages", ws.Config{SendQueueBytes: 100 << 10, MaxPageBytes: 64 << 10}},
		{"queue smaller than two default pages", ws.Config{SendQueueBytes: ws.DefaultMaxPageBytes}},
		{"page of more than MaxHistory messages", ws.Config{MaxPageMessages: ws.MaxHistory + 1}},
		{"negative page bytes", ws.Config{MaxPageBytes: -1}},
		{"history burst smaller than a page", ws.Config{HistoryBurst: 64 << 10, MaxPageBytes: 128 << 10, SendQueueBytes: 1 << 20}},
		{"negative history rate", ws.Config{HistoryRate: -1}},
		{"history rate below a byte a second", ws.Config{HistoryRate: 0.5}},
		{"flood factor of 1", ws.Config{FloodFactor: 1}},
		{"negative flood window", ws.Config{FloodWindow: -time.Second}},
	}
	hub := ws.NewHub(slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if gw, err := ws.NewGateway(tc.cfg, hub, nil, nil); err == nil {
				t.Fatalf("NewGateway(%+v) = %v, want an error", tc.cfg, gw)
			}
		})
	}
}

// gatedStore is the memory backend whose appends complete only once gate
// is closed, like a store whose round trip is slow.
type gatedStore struct {
	*memstore.Backend
	gate chan struct{}
	// queued counts the appends handed to the store.
	queued atomic.Int64
}

func (s *gatedStore) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	s.queued.Add(1)
	go func() {
		<-s.gate
		done(s.Append(context.Background(), msg))
	}()
	return nil
}

// TestRateLimitedAfterEarlierAcks: the rate_limited answer to a frame
// discarded unread comes after the answers to the sends read before it,
// even while those still wait for the store: replies keep the order of
// the frames.
func TestRateLimitedAfterEarlierAcks(t *testing.T) {
	gate := make(chan struct{})
	h := startStoring(t, harnessRoomMaxLen, ws.Config{FrameRate: 0.01, FrameBurst: 2},
		func(be *memstore.Backend) pipeline.Store { return &gatedStore{Backend: be, gate: gate} })
	c := newRawClient(t, h, "alice")
	c.write(t, map[string]any{"type": "join", "room": "r"})
	c.until(t, func(f wstest.Frame) bool { return f.Type == "joined" })
	c.write(t, map[string]any{"type": "send", "room": "r", "text": "held", "ref": "a"})
	c.write(t, map[string]any{"type": "send", "room": "r", "text": "over the rate", "ref": "b"})
	timer := time.After(300 * time.Millisecond)
	for held := true; held; {
		select {
		case f := <-c.frames:
			if f.Type == "ack" || f.Type == "error" {
				t.Fatalf("%s while the send read first still waits for the store", f.Raw)
			}
		case <-timer:
			held = false
		}
	}
	close(gate)
	var answers []string
	for _, f := range c.until(t, func(f wstest.Frame) bool { return f.Type == "error" }) {
		if f.Type == "ack" || f.Type == "error" {
			answers = append(answers, f.Type+":"+f.Ref+":"+f.Code)
		}
	}
	if want := []string{"ack:a:", "error::rate_limited"}; !slices.Equal(answers, want) {
		t.Fatalf("answers %q, want %q", answers, want)
	}
}

// TestSendWindowBytes: while the store holds a connection's sends, the
// sends waiting at once hold at most MaxInFlightBytes of text (beyond it
// the connection is not read), even though MaxInFlightSends would let
// more wait; once the store answers, every send is stored and acked in
// order.
func TestSendWindowBytes(t *testing.T) {
	gate := make(chan struct{})
	var store *gatedStore
	const text, window = 4 << 10, 16 << 10 // four sends' worth
	h := startStoring(t, harnessRoomMaxLen, ws.Config{MaxInFlightSends: 32, MaxInFlightBytes: window, ReadLimit: 64 << 10},
		func(be *memstore.Backend) pipeline.Store {
			store = &gatedStore{Backend: be, gate: gate}
			return store
		})
	c := newRawClient(t, h, "alice")
	if err := c.conn.WriteJSON(map[string]any{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	c.until(t, func(f wstest.Frame) bool { return f.Type == "joined" })
	const sends = 12
	for i := range sends {
		if err := c.conn.WriteJSON(map[string]any{"type": "send", "room": "r", "text": strings.Repeat("x", text), "ref": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The reader takes what the window lets in, then waits.
	deadline := time.Now().Add(wait)
	for store.queued.Load() < window/text && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // time to take more, were it let
	if n := store.queued.Load(); n != window/text {
		t.Fatalf("%d sends reached the store while it held them, want %d (the bytes window)", n, window/text)
	}
	close(gate)
	var acks []string
	for _, f := range c.until(t, func(f wstest.Frame) bool { return f.Type == "ack" && f.Ref == fmt.Sprint(sends-1) }) {
		if f.Type == "ack" {
			acks = append(acks, f.Ref)
		}
	}
	want := make([]string, sends)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	if !slices.Equal(acks, want) {
		t.Fatalf("acks %q, want %q", acks, want)
	}
}

// TestResyncAnswersSendsFirst: a member closed by Hub.Resync while a send
// of its still waits for the store reads nothing more, gets nothing
// delivered from the moment Resync returns, gets that send's ack, and only
// then the close 1012.
func TestResyncAnswersSendsFirst(t *testing.T) {
	t.Parallel()
	h, store, gate := startGated(t, ws.Config{})
	c := newRawClient(t, h, "alice")
	c.write(t, map[string]any{"type": "join", "room": "r"})
	c.until(t, func(f wstest.Frame) bool { return f.Type == ws.TypeJoined })
	c.write(t, map[string]any{"type": "send", "room": "r", "text": "held", "ref": "a"})
	store.waitQueued(t, 1)
	if n := h.hub.Resync(func(string) bool { return true }); n != 1 {
		t.Fatalf("Resync affected %d connections, want 1", n)
	}
	// Read by no one: the reader has stopped.
	c.write(t, map[string]any{"type": "send", "room": "r", "text": "after the resync", "ref": "b"})
	// At once, as the delivery loop delivers the message after a gap
	// right after Resync: the member must not get it.
	h.deliverLive("r")
	time.Sleep(300 * time.Millisecond) // time for it to arrive, were it sent
	close(gate)
	c.closesAfter(t, []string{"ack:a"}, ws.CloseResync, "resync: reconnect and resume")
	if n := store.queued.Load(); n != 1 {
		t.Fatalf("%d sends reached the store, want 1 (the one read before the resync)", n)
	}
}

// startGated is startStoring with a gatedStore, whose gate it returns.
func startGated(t *testing.T, cfg ws.Config) (*harness, *gatedStore, chan struct{}) {
	t.Helper()
	gate := make(chan struct{})
	var store *gatedStore
	h := startStoring(t, harnessRoomMaxLen, cfg, func(be *memstore.Backend) pipeline.Store {
		store = &gatedStore{Backend: be, gate: gate}
		return store
	})
	return h, store, gate
}

// waitQueued waits until n appends reached the store.
func (s *gatedStore) waitQueued(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.queued.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends reached the store after %v, want %d", s.queued.Load(), wait, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deliverLive hands the hub a live message of room, as the feed would: a
// member gets it at once.
func (h *harness) deliverLive(room string) {
	h.hub.Deliver(pipeline.Message{ID: "live", Room: room, Seq: "9999999999999-0", User: "bob", Text: "live", TS: time.Now()})
}
