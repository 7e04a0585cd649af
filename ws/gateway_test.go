package ws_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/ws"
)

// TestTwoClientsSeeEachOtherInOrder: every message reaches both members once,
// in one order with increasing seqs, and each sender gets its acks.
func TestTwoClientsSeeEachOtherInOrder(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{FrameRate: 1000, FrameBurst: 1000})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "lobby", 0)
	const n = 50
	var wg sync.WaitGroup
	for _, c := range []struct {
		cl   *wstest.Client
		name string
	}{{a, "a"}, {b, "b"}} {
		wg.Go(func() {
			for i := range n {
				if err := c.cl.Say("lobby", fmt.Sprintf("%s-%d", c.name, i), fmt.Sprintf("%s-%d", c.name, i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got := map[string][]string{}
	for name, c := range map[string]*wstest.Client{"alice": a, "bob": b} {
		var texts []string
		acks := 0
		last := ""
		for len(texts) < 2*n || acks < n {
			f, err := c.Next(wait)
			if err != nil {
				t.Fatalf("%s: got %d messages and %d acks: %v", name, len(texts), acks, err)
			}
			switch f.Type {
			case "ack":
				acks++
			case "presence": // presence is tested on its own
			case "message":
				if last != "" && pipeline.CompareSeq(last, f.Seq) >= 0 {
					t.Fatalf("%s: seq %s after %s", name, f.Seq, last)
				}
				last = f.Seq
				texts = append(texts, f.Text)
			default:
				t.Fatalf("%s: unexpected frame %s", name, f.Raw)
			}
		}
		got[name] = texts
	}
	if strings.Join(got["alice"], ",") != strings.Join(got["bob"], ",") {
		t.Fatalf("orders differ:\nalice %v\nbob   %v", got["alice"], got["bob"])
	}
	seen := map[string]bool{}
	for _, tx := range got["alice"] {
		if seen[tx] {
			t.Fatalf("%s delivered twice", tx)
		}
		seen[tx] = true
	}
	// Each sender's own messages keep their sending order.
	for _, p := range []string{"a", "b"} {
		next := 0
		for _, tx := range got["alice"] {
			if strings.HasPrefix(tx, p+"-") {
				if tx != fmt.Sprintf("%s-%d", p, next) {
					t.Fatalf("sender %s: got %s, want %s-%d", p, tx, p, next)
				}
				next++
			}
		}
	}
}

// TestOtherRoomSeesNothing: delivery is confined to the room.
func TestOtherRoomSeesNothing(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "other", 0)
	say(t, a, "lobby", "hello lobby", "r1")
	say(t, b, "other", "marker", "r2")
	f, err := b.Await("message", wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Text != "marker" || f.Room != "other" {
		t.Fatalf("bob got %s, want only his own room's marker", f.Raw)
	}
}

// TestMessageFrameFields: the message frame carries every field of protocol v1.
func TestMessageFrameFields(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	ack := say(t, a, "lobby", "hi", "c-1")
	m, err := a.Await("message", wait)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != ack.ID || m.Seq != ack.Seq || m.User != "alice" || m.Text != "hi" || m.Ref != "c-1" || m.Room != "lobby" {
		t.Fatalf("message %s does not match ack %s", m.Raw, ack.Raw)
	}
	if ts, err := time.Parse(time.RFC3339, m.TS); err != nil || !strings.HasSuffix(m.TS, "Z") || len(m.TS) != len("2006-01-02T15:04:05.000Z") {
		t.Fatalf("ts %q is not RFC 3339 UTC with milliseconds (%v, %v)", m.TS, ts, err)
	}
}

// TestHistoryOnJoin: a join returns the last N messages, oldest first.
func TestHistoryOnJoin(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	for i := range 8 {
		say(t, a, "lobby", fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i))
	}
	b := h.dial(t, "bob")
	f := join(t, b, "lobby", 3)
	var texts []string
	for _, m := range f.History {
		texts = append(texts, m.Text)
	}
	if got, want := strings.Join(texts, ","), "m5,m6,m7"; got != want {
		t.Fatalf("history = %s, want %s", got, want)
	}
	if f := join(t, h.dial(t, "carol"), "lobby", 0); len(f.History) != 0 {
		t.Fatalf("history 0 returned %d messages", len(f.History))
	}
}

// TestSinceResume: a reconnecting client gets exactly the messages after its
// last seq, then live ones, none twice.
func TestSinceResume(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "lobby", 0)
	for i := range 3 {
		say(t, a, "lobby", fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i))
	}
	seen := collect(t, b, "lobby", 3)
	b.Close()
	for i := 3; i < 6; i++ {
		say(t, a, "lobby", fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i))
	}
	b2 := h.dial(t, "bob")
	if err := b2.Send(map[string]any{"type": "join", "room": "lobby", "since": seen[2].Seq}); err != nil {
		t.Fatal(err)
	}
	f, err := b2.Await("joined", wait)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range f.History {
		texts = append(texts, m.Text)
	}
	if got, want := strings.Join(texts, ","), "m3,m4,m5"; got != want || f.Truncated {
		t.Fatalf("resume = %s (truncated %v), want %s", got, f.Truncated, want)
	}
	say(t, a, "lobby", "live", "r-live")
	live := collect(t, b2, "lobby", 1)
	if live[0].Text != "live" {
		t.Fatalf("after resume got %q, want live", live[0].Text)
	}
}

// TestSinceTruncated: a since older than the oldest kept message says so.
func TestSinceTruncated(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{FrameRate: 1000, FrameBurst: 1000})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	first := say(t, a, "lobby", "first", "r0")
	for i := range 25 { // the harness keeps 20 per room
		say(t, a, "lobby", fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i+1))
	}
	b := h.dial(t, "bob")
	if err := b.Send(map[string]any{"type": "join", "room": "lobby", "since": first.Seq}); err != nil {
		t.Fatal(err)
	}
	f, err := b.Await("joined", wait)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Truncated || len(f.History) != 20 {
		t.Fatalf("truncated = %v with %d messages, want true with 20", f.Truncated, len(f.History))
	}
}

// TestOlderHistory: a history frame pages back before a seq.
func TestOlderHistory(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	var acks []wstest.Frame
	for i := range 6 {
		acks = append(acks, say(t, a, "lobby", fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i)))
	}
	if err := a.Send(map[string]any{"type": "history", "room": "lobby", "before": acks[4].Seq, "limit": 2, "ref": "h-1"}); err != nil {
		t.Fatal(err)
	}
	f, err := a.Await("history", wait)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Messages) != 2 || f.Messages[0].Text != "m2" || f.Messages[1].Text != "m3" || !f.More || f.Ref != "h-1" {
		t.Fatalf("history page = %s", f.Raw)
	}
}

// TestBadInput: every bad frame gets its error code, keeps the connection
// open, and leaves another member of the room untouched.
func TestBadInput(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{MaxRooms: 2, FrameRate: 1000, FrameBurst: 1000})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "lobby", 0)
	long := strings.Repeat("x", pipeline.DefaultMaxTextBytes+1)
	cases := []struct {
		name  string
		kind  int
		frame string
		code  string
	}{
		{"not json", websocket.TextMessage, `hello`, ws.CodeBadFrame},
		{"binary frame", websocket.BinaryMessage, `{"type":"send"}`, ws.CodeBadFrame},
		{"unknown type", websocket.TextMessage, `{"type":"dance","room":"lobby"}`, ws.CodeBadFrame},
		{"no type", websocket.TextMessage, `{"room":"lobby"}`, ws.CodeBadFrame},
		{"two objects", websocket.TextMessage, `{"type":"leave","room":"lobby"} {}`, ws.CodeBadFrame},
		{"wrong field type", websocket.TextMessage, `{"type":"send","room":"lobby","text":5}`, ws.CodeBadFrame},
		{"text too large", websocket.TextMessage, `{"type":"send","room":"lobby","text":"` + long + `","ref":"big"}`, pipeline.CodeTooLarge},
		{"empty text", websocket.TextMessage, `{"type":"send","room":"lobby","text":""}`, pipeline.CodeInvalid},
		{"blank text", websocket.TextMessage, `{"type":"send","room":"lobby","text":"  \n "}`, pipeline.CodeInvalid},
		{"control character", websocket.TextMessage, `{"type":"send","room":"lobby","text":"a\u0007b"}`, pipeline.CodeInvalid},
		{"invalid utf-8", websocket.TextMessage, "{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"a\xffb\"}", pipeline.CodeInvalid},
		{"bad room name", websocket.TextMessage, `{"type":"join","room":"no spaces"}`, pipeline.CodeInvalid},
		{"empty room", websocket.TextMessage, `{"type":"join","room":""}`, pipeline.CodeInvalid},
		{"long room", websocket.TextMessage, `{"type":"join","room":"` + strings.Repeat("r", 65) + `"}`, pipeline.CodeInvalid},
		{"long ref", websocket.TextMessage, `{"type":"send","room":"lobby","text":"x","ref":"` + strings.Repeat("r", 65) + `"}`, pipeline.CodeInvalid},
		{"history too big", websocket.TextMessage, `{"type":"join","room":"x","history":501}`, pipeline.CodeInvalid},
		{"negative history", websocket.TextMessage, `{"type":"join","room":"x","history":-1}`, pipeline.CodeInvalid},
		{"bad since", websocket.TextMessage, `{"type":"join","room":"x","since":"yesterday"}`, pipeline.CodeInvalid},
		{"send without join", websocket.TextMessage, `{"type":"send","room":"elsewhere","text":"x"}`, ws.CodeNotJoined},
		{"leave without join", websocket.TextMessage, `{"type":"leave","room":"elsewhere"}`, ws.CodeNotJoined},
		{"room limit", websocket.TextMessage, `{"type":"join","room":"third"}`, ws.CodeRoomLimit},
	}
	join(t, a, "second", 0) // a is now at its limit of 2 rooms
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.SendRaw(tc.kind, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			f, err := a.Await("error", wait)
			if err != nil {
				t.Fatal(err)
			}
			if f.Code != tc.code || f.Message == "" {
				t.Fatalf("got error %q (%q), want %q with a reason", f.Code, f.Message, tc.code)
			}
		})
	}
	// The connection still works, and bob saw nothing but the good message.
	say(t, a, "lobby", "still here", "ok")
	m := collect(t, b, "lobby", 1)
	if m[0].Text != "still here" {
		t.Fatalf("bob got %q, want the one good message", m[0].Text)
	}
	select {
	case f := <-b.Frames():
		t.Fatalf("bob got an extra frame %s", f.Raw)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestErrorEchoesRefAndRoom: errors name the ref and room of the frame.
func TestErrorEchoesRefAndRoom(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	if err := a.Say("lobby", "", "r-9"); err != nil {
		t.Fatal(err)
	}
	f, err := a.Await("error", wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Ref != "r-9" || f.Room != "lobby" {
		t.Fatalf("error %s lacks ref or room", f.Raw)
	}
}

// TestLeave: leave answers left and stops delivery.
func TestLeave(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "lobby", 0)
	join(t, b, "side", 0)
	join(t, a, "side", 0)
	if err := b.Send(map[string]any{"type": "leave", "room": "lobby"}); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Await("left", wait); err != nil || f.Room != "lobby" {
		t.Fatalf("left = %v, %v", f.Raw, err)
	}
	say(t, a, "lobby", "gone", "r1")
	say(t, a, "side", "marker", "r2")
	if f, err := b.Await("message", wait); err != nil || f.Text != "marker" {
		t.Fatalf("bob got %q (%v), want only the marker", f.Text, err)
	}
}

// TestRateLimited: frames beyond the connection's rate get rate_limited
// with the time to wait.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{FrameRate: 1, FrameBurst: 2})
	a := h.dial(t, "alice")
	for range 3 {
		if err := a.Send(map[string]any{"type": "join", "room": "lobby", "history": 0}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := a.Await("error", wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Code != pipeline.CodeRateLimited || f.Retry <= 0 {
		t.Fatalf("got %s, want rate_limited with retry_after_ms", f.Raw)
	}
}

// TestReadLimitCloses1009: a frame over the read limit closes the socket
// with 1009, and other sockets carry on.
func TestReadLimitCloses1009(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{ReadLimit: 1024})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, b, "lobby", 0)
	if err := a.SendRaw(websocket.TextMessage, []byte(`{"type":"send","room":"lobby","text":"`+strings.Repeat("x", 2000)+`"}`)); err != nil {
		t.Fatal(err)
	}
	for range a.Frames() {
	}
	if !websocket.IsCloseError(a.CloseErr, websocket.CloseMessageTooBig) {
		t.Fatalf("close = %v, want 1009", a.CloseErr)
	}
	say(t, b, "lobby", "fine", "r1")
}

// TestSlowClientDisconnected: a member that stops reading is dropped with
// 1008 and counted, while the others still get every message.
func TestSlowClientDisconnected(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{SendQueue: 16, FrameRate: 1e6, FrameBurst: 1e6})
	fast := h.dial(t, "fast")
	join(t, fast, "lobby", 0)
	// The slow client is a raw connection that never reads after joining.
	slow, _, err := websocket.DefaultDialer.Dial(strings.Replace(h.srv.URL, "http", "ws", 1)+"/ws?user=slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if err := slow.WriteJSON(map[string]any{"type": "join", "room": "lobby", "history": 0}); err != nil {
		t.Fatal(err)
	}
	// Every send waits for its ack and for the fast client's own copy, as
	// a prompt reader does. Acks (from the store) and messages (from the
	// feed) travel separate paths: pacing on acks alone lets the feed fall
	// behind and then deliver a burst larger than this 16-frame queue,
	// which drops the fast client too.
	echo := func(text, ref string) {
		t.Helper()
		say(t, fast, "lobby", text, ref)
		if _, err := fast.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" && f.Ref == ref }, wait); err != nil {
			t.Fatalf("fast waiting for message %q: %v", ref, err)
		}
	}
	big := strings.Repeat("y", 4000)
	// Send until the slow client is dropped: its TCP buffers fill first,
	// then its send queue.
	sent := 0
	for ; sent < 10000 && h.hub.SlowDisconnects() == 0; sent++ {
		echo(big, fmt.Sprint(sent))
	}
	if got := h.hub.SlowDisconnects(); got != 1 {
		t.Fatalf("slow disconnects = %d after %d messages, want 1", got, sent)
	}
	// The slow socket's close frame is behind its unread data: read until
	// it now, as the server drops a connection whose close frame cannot be
	// written within 2 s (1006).
	ended := make(chan error, 1)
	go func() {
		_ = slow.SetReadDeadline(time.Now().Add(wait))
		for {
			if _, _, err := slow.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	for i := range 20 { // the room goes on without the slow client
		echo("after", fmt.Sprint("after-", i))
	}
	err = <-ended
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("slow client ended with %v, want close 1008", err)
	}
}

// TestShutdownCloses1001: shutdown flushes queued frames and closes every
// socket with 1001.
func TestShutdownCloses1001(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a, b := h.dial(t, "alice"), h.dial(t, "bob")
	join(t, a, "lobby", 0)
	join(t, b, "lobby", 0)
	say(t, a, "lobby", "before shutdown", "r1")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wstest.Client{a, b} {
		for range c.Frames() {
		}
		if !websocket.IsCloseError(c.CloseErr, websocket.CloseGoingAway) {
			t.Fatalf("close = %v, want 1001", c.CloseErr)
		}
	}
	if _, err := wstest.Dial(h.srv.URL, "late"); err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
}

// TestUpgradeChecks: bad users get 400 before the upgrade; foreign origins
// need to be allowed.
func TestUpgradeChecks(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{AllowedOrigins: []string{"https://chat.example"}})
	open := start(t, ws.Config{AllowedOrigins: []string{"*"}})
	cases := []struct {
		name   string
		h      *harness
		user   string
		origin string
		status int
	}{
		{"no user", h, "", "", http.StatusBadRequest},
		{"control char user", h, "a\x01b", "", http.StatusBadRequest},
		{"long user", h, strings.Repeat("u", 33), "", http.StatusBadRequest},
		{"padded user", h, " bob", "", http.StatusBadRequest},
		{"no origin", h, "bob", "", http.StatusSwitchingProtocols},
		{"same host", h, "bob", strings.TrimSuffix(h.srv.URL, "/"), http.StatusSwitchingProtocols},
		{"listed origin", h, "bob", "https://chat.example", http.StatusSwitchingProtocols},
		{"foreign origin", h, "bob", "https://evil.example", http.StatusForbidden},
		{"star allows all", open, "bob", "https://evil.example", http.StatusSwitchingProtocols},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			u := strings.Replace(tc.h.srv.URL, "http", "ws", 1) + "/ws?user=" + url.QueryEscape(tc.user)
			conn, resp, err := websocket.DefaultDialer.Dial(u, hdr)
			if conn != nil {
				conn.Close()
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

// TestRejectedByModerator: a moderator's rejection reaches the sender as
// rejected with its reason and is dead-lettered; nothing is delivered.
func TestRejectedByModerator(t *testing.T) {
	t.Parallel()
	block := pipeline.Moderator{Name: "no-spam", Middleware: func(next message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if strings.Contains(string(msg.Payload), "spam") {
				return nil, pipeline.Errorf(pipeline.CodeRejected, "no spam here")
			}
			return next(msg)
		}
	}}
	h := start(t, ws.Config{}, block)
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	if err := a.Say("lobby", "buy spam", "r1"); err != nil {
		t.Fatal(err)
	}
	f, err := a.Await("error", wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Code != pipeline.CodeRejected || f.Message != "no spam here" || f.Moderator != "no-spam" || f.Ref != "r1" {
		t.Fatalf("got %s", f.Raw)
	}
	dead := h.backend.DeadLetters()
	if len(dead) != 1 || dead[0].Metadata.Get(pipeline.MetaModerator) != "no-spam" || dead[0].Metadata.Get(pipeline.MetaReason) != "no spam here" {
		t.Fatalf("dead letters = %v", dead)
	}
	say(t, a, "lobby", "fine", "r2")
	if m := collect(t, a, "lobby", 1); m[0].Text != "fine" {
		t.Fatalf("delivered %q, want only the accepted message", m[0].Text)
	}
}

// TestPresence: a member gets a snapshot after joined, and diffs when others
// join and leave; a user with two connections in the room counts once.
func TestPresence(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.hub.RunPresence(ctx, h.backend.NewPresence("test-instance", 0), 20*time.Millisecond)
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	snap, err := a.Await("presence", wait)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(snap.Users) != "[alice]" || snap.Count != 1 {
		t.Fatalf("snapshot = %s", snap.Raw)
	}
	a2 := h.dial(t, "alice") // a second tab
	join(t, a2, "lobby", 0)
	b := h.dial(t, "bob")
	join(t, b, "lobby", 0)
	f, err := a.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "presence" && slices.Contains(f.Joined, "bob") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Count != 2 || len(slices.Compact(slices.Clone(f.Joined))) != len(f.Joined) {
		t.Fatalf("join diff = %s, want 2 users, each named once", f.Raw)
	}
	b.Close()
	f, err = a.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "presence" && len(f.Left) > 0 }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.Left) != "[bob]" || f.Count != 1 {
		t.Fatalf("leave diff = %s", f.Raw)
	}
}

// TestSinceDropsLateDuplicates: a resume from the newest seq gets nothing
// it already has, even when the feed delivers that message again late (as
// a lagging instance's feed would).
func TestSinceDropsLateDuplicates(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	join(t, a, "lobby", 0)
	ack := say(t, a, "lobby", "only", "r1")
	b := h.dial(t, "bob")
	if err := b.Send(map[string]any{"type": "join", "room": "lobby", "since": ack.Seq}); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Await("joined", wait); err != nil || len(f.History) != 0 {
		t.Fatalf("joined = %s, %v; want no history", f.Raw, err)
	}
	stored, err := h.backend.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 1})
	if err != nil || len(stored.Messages) != 1 {
		t.Fatalf("history = %+v, %v", stored, err)
	}
	h.hub.Deliver(stored.Messages[0]) // the same message, late
	say(t, a, "lobby", "next", "r2")
	f, err := b.Await("message", wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Text != "next" {
		t.Fatalf("bob got %q first, want only the new message", f.Text)
	}
}

// heldStore holds the outcome of an append whose text is "hold" until
// release is closed; entered receives a token for each such append.
type heldStore struct {
	*memstore.Backend
	release chan struct{}
	entered chan struct{}
}

func (s *heldStore) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	if string(msg.Payload) != "hold" {
		return s.Backend.AppendAsync(msg, done)
	}
	s.entered <- struct{}{}
	return s.Backend.AppendAsync(msg, func(a pipeline.Appended, err error) {
		go func() { <-s.release; done(a, err) }()
	})
}

// awaitHeld waits until n appends of "hold" reached the store.
func awaitHeld(t *testing.T, entered <-chan struct{}, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-entered:
		case <-time.After(wait):
			t.Fatalf("%d of %d held sends reached the store within %v", i, n, wait)
		}
	}
}

// startHeld starts a gateway on a memory backend whose appends of "hold"
// are answered only once the returned function is called (at the latest at
// cleanup), and dials alice, joined to lobby.
func startHeld(t *testing.T) (*ws.Gateway, *wstest.Client, func(), <-chan struct{}) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := memstore.New(memstore.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	store := &heldStore{Backend: be, release: make(chan struct{}), entered: make(chan struct{}, 16)}
	var release sync.Once
	open := func() { release.Do(func() { close(store.release) }) }
	hub := ws.NewHub(log, 0)
	p, err := pipeline.New(pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: store, DeadLetters: be, Logger: log},
		Delivery: pipeline.DeliveryConfig{Feed: be, Deliverer: hub, Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ws.NewGateway(ws.Config{Logger: log}, hub, p, be)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = p.Run(ctx) }()
	<-p.Running()
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		open()
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		_ = gw.Shutdown(sctx)
		srv.Close()
		cancel()
		<-ran
	})
	a, err := wstest.Dial(srv.URL, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	join(t, a, "lobby", 0)
	return gw, a, open, store.entered
}

// TestBinaryErrorAfterEarlierAcks: the error answering a binary frame
// leaves after the answers of the sends read before it, like the answer
// of any other frame that is not a send (PROTOCOL.md §11.2).
func TestBinaryErrorAfterEarlierAcks(t *testing.T) {
	t.Parallel()
	_, a, open, held := startHeld(t)
	if err := a.Say("lobby", "hold", "s1"); err != nil {
		t.Fatal(err)
	}
	awaitHeld(t, held, 1)
	if err := a.SendRaw(websocket.BinaryMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // an answer that does not wait leaves now
	open()
	order := awaitAnswers(t, a, 2, "ack", "error")
	if order[0] != "ack  s1" || order[1] != "error "+ws.CodeBadFrame+" " {
		t.Fatalf("answers %q, want the ack of s1, then bad_frame", order)
	}
}

// TestShutdownAcksSendInProgress: a send whose append is in progress when
// the gateway shuts down is acked once stored, then the connection closes
// with 1001 (PROTOCOL.md §10), not answered unavailable.
func TestShutdownAcksSendInProgress(t *testing.T) {
	t.Parallel()
	gw, a, open, held := startHeld(t)
	if err := a.Say("lobby", "hold", "s1"); err != nil {
		t.Fatal(err)
	}
	awaitHeld(t, held, 1)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		shut <- gw.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond) // Shutdown is under way
	open()
	f, err := a.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == "s1" && (f.Type == "ack" || f.Type == "error") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != "ack" {
		t.Fatalf("the stored send was answered %s", f.Raw)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestShutdownTimeoutEndsWaits: when Shutdown's context ends while sends
// are still in the pipeline, they are answered unavailable and their
// connection closes with 1001 at once, not each after the pipeline's own
// bound on the wait.
func TestShutdownTimeoutEndsWaits(t *testing.T) {
	t.Parallel()
	gw, a, _, held := startHeld(t)
	for _, ref := range []string{"h1", "h2", "h3"} {
		if err := a.Say("lobby", "hold", ref); err != nil {
			t.Fatal(err)
		}
	}
	awaitHeld(t, held, 3) // all three in the pipeline: a frame not yet read at Shutdown is not answered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := gw.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with three sends held")
	}
	for _, ref := range []string{"h1", "h2", "h3"} {
		f, err := a.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, wait)
		if err != nil {
			t.Fatalf("%s: %v (answered only once the pipeline's own bound ran out)", ref, err)
		}
		if f.Code != pipeline.CodeUnavailable {
			t.Fatalf("%s answered %s, want unavailable", ref, f.Raw)
		}
	}
}

// TestPingAnswersPong: a ping (PROTOCOL.md §6.7) is answered with a pong
// carrying its ref, after the answers to the sends before it, in any
// room or none.
func TestPingAnswersPong(t *testing.T) {
	t.Parallel()
	_, a, open, held := startHeld(t)
	if err := a.Say("lobby", "hold", "s1"); err != nil {
		t.Fatal(err)
	}
	awaitHeld(t, held, 1)
	if err := a.SendRaw(websocket.TextMessage, []byte(`{"type":"ping","ref":"p1"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // an answer that does not wait leaves now
	open()
	order := awaitAnswers(t, a, 2, "ack", "pong")
	if order[0] != "ack  s1" || order[1] != "pong  p1" {
		t.Fatalf("answers %q, want the ack of s1, then the pong of p1", order)
	}
	if err := a.SendRaw(websocket.TextMessage, []byte(`{"type":"ping","room":"not-joined"}`)); err != nil {
		t.Fatal(err)
	}
	f, err := a.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "pong" || f.Type == "error" }, wait)
	if err != nil || f.Type != "pong" || f.Ref != "" {
		t.Fatalf("a ping naming a room not joined, without ref: got %+v, %v; want a pong without ref", f, err)
	}
}

// awaitAnswers returns the next n frames of the given types that a
// receives, each as "type code ref".
func awaitAnswers(t *testing.T, a *wstest.Client, n int, types ...string) []string {
	t.Helper()
	var order []string
	for len(order) < n {
		f, err := a.AwaitFunc(func(f wstest.Frame) bool { return slices.Contains(types, f.Type) }, wait)
		if err != nil {
			t.Fatalf("after %q: %v", order, err)
		}
		order = append(order, f.Type+" "+f.Code+" "+f.Ref)
	}
	return order
}
