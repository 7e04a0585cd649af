package ws_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/ws"
)

// fill stores texts in room through a socket of its own, pipelining the
// sends (the gateway's frame burst must admit them all), and returns their
// acks in order.
func fill(t *testing.T, h *harness, room string, texts []string) []wstest.Frame {
	t.Helper()
	c := h.dial(t, "filler")
	join(t, c, room, 0)
	for i, tx := range texts {
		if err := c.Say(room, tx, fmt.Sprint("f", i)); err != nil {
			t.Fatal(err)
		}
	}
	acks := make([]wstest.Frame, 0, len(texts))
	for len(acks) < len(texts) {
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" || f.Type == "error" }, wait)
		if err != nil {
			t.Fatalf("filling %s: %d of %d acks: %v", room, len(acks), len(texts), err)
		}
		if f.Type == "error" {
			t.Fatalf("filling %s: %s", room, f.Raw)
		}
		acks = append(acks, f)
	}
	// Once the filler has the last message, the hub has delivered them
	// all, so none reaches a member that joins later (a join with history
	// 0 takes every live message after it, even one stored just before).
	last := acks[len(acks)-1].Seq
	if _, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" && f.Seq == last }, wait); err != nil {
		t.Fatalf("filling %s: the last message was not delivered: %v", room, err)
	}
	c.Close()
	return acks
}

// repeated returns n texts: prefix, the index, and padding up to size bytes.
func repeated(n, size int, pad string) []string {
	out := make([]string, n)
	for i := range out {
		head := fmt.Sprintf("m%03d ", i)
		out[i] = head + strings.Repeat(pad, (size-len(head))/len(pad))
	}
	return out
}

// waitFor polls cond until it holds, failing after wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, wait, what, cond)
}

// waitForWithin polls cond until it holds, failing after d.
func waitForWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialRaw opens a gorilla connection as user that the test drives itself.
func dialRaw(t *testing.T, h *harness, user string) *websocket.Conn {
	t.Helper()
	return dialRawAt(t, h.srv.URL, user)
}

// dialRawAt is dialRaw for the server at base (http://host:port).
func dialRawAt(t *testing.T, base, user string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"/ws?user="+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// dialNonReader is dialRaw for a client that will not read: its socket's
// receive buffer is fixed (no autotuning to megabytes), so the server's
// writes block sooner, as they do behind a slow or hostile client. (Smaller
// than the loopback MSS, the window would stall the connection for good.)
func dialNonReader(t *testing.T, h *harness, user string) *websocket.Conn {
	t.Helper()
	conn := dialRaw(t, h, user)
	tcp, ok := conn.NetConn().(*net.TCPConn)
	if !ok {
		t.Fatalf("connection is a %T, not TCP", conn.NetConn())
	}
	if err := tcp.SetReadBuffer(256 << 10); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readUntilClose reads conn until it ends and returns the error that ended it.
func readUntilClose(conn *websocket.Conn) error {
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return err
		}
	}
}

// TestSlowRejoinerClosedByByteBudget: a socket that never reads and joins
// a room of large messages again and again with since "0-0" (each joined a
// full page) is closed as slow (1008) as soon as its queue would pass
// SendQueueBytes, not when a write deadline fires; its queue never holds
// more than the budget, and another member's send is still acknowledged.
func TestSlowRejoinerClosedByByteBudget(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// reads makes the attacker read after it was closed, to see the
		// close frame; otherwise it never reads and the server must drop
		// it by itself.
		reads bool
	}{
		{name: "reads after it is closed", reads: true},
		{name: "never reads", reads: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := ws.Config{
				SendQueueBytes: 256 << 10, MaxPageBytes: 64 << 10,
				// A write deadline far beyond the test's waits: a drop
				// within them is the byte budget's, not the deadline's.
				WriteWait: 10 * time.Minute,
				FrameRate: 1e5, FrameBurst: 1e5,
			}
			h := startKeeping(t, 1000, cfg)
			// Each text is 4 KiB of "<", which a JSON encoder escaping
			// HTML would send as 24 KiB.
			fill(t, h, "big", repeated(60, pipeline.DefaultMaxTextBytes, "<"))
			bob := h.dial(t, "bob")
			join(t, bob, "big", 0)

			mallory := dialNonReader(t, h, "mallory")
			rejoin := []byte(`{"type":"join","room":"big","since":"0-0"}`)
			for range 5000 {
				if h.hub.SlowDisconnects() > 0 {
					break
				}
				if err := mallory.WriteMessage(websocket.TextMessage, rejoin); err != nil {
					break // dropped already
				}
			}
			// The kernel's socket buffers take megabytes before the
			// queue fills, which the race detector makes slow to encode.
			waitForWithin(t, 4*wait, "the slow client to be closed", func() bool { return h.hub.SlowDisconnects() > 0 })
			if got := h.hub.MaxQueuedBytes(); got > int64(cfg.SendQueueBytes) {
				t.Errorf("a send queue held %d bytes, want at most the budget %d", got, cfg.SendQueueBytes)
			}
			say(t, bob, "big", "still here", "b1")

			if tc.reads {
				err := readUntilClose(mallory)
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
					t.Fatalf("mallory's read ended with %v, want close 1008", err)
				}
			}
			waitFor(t, "the server to drop mallory's connection", func() bool { return h.hub.Conns() == 1 })
			waitFor(t, "mallory's queue to be released", func() bool { return h.hub.QueuedBytes() < int64(cfg.MaxPageBytes) })
			if got := h.hub.SlowDisconnects(); got != 1 {
				t.Errorf("slow disconnects = %d, want 1 (bob is not slow)", got)
			}
		})
	}
}

// pageOf decodes the messages of a joined or history frame as sent, to
// measure them against the budget.
func pageOf(t *testing.T, f wstest.Frame) []json.RawMessage {
	t.Helper()
	var p struct {
		History  []json.RawMessage `json:"history"`
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal([]byte(f.Raw), &p); err != nil {
		t.Fatalf("frame %.200s: %v", f.Raw, err)
	}
	if f.Type == "joined" {
		return p.History
	}
	return p.Messages
}

// checkBudget fails when a page breaks the budgets of cfg: more than
// MaxPageMessages, or more than MaxPageBytes of messages unless it holds
// only one.
func checkBudget(t *testing.T, cfg ws.Config, f wstest.Frame) {
	t.Helper()
	msgs := pageOf(t, f)
	if len(msgs) > cfg.MaxPageMessages {
		t.Errorf("%s page holds %d messages, budget %d", f.Type, len(msgs), cfg.MaxPageMessages)
	}
	size := 0
	for _, m := range msgs {
		size += len(m) + 1
	}
	if len(msgs) > 1 && size-1 > cfg.MaxPageBytes {
		t.Errorf("%s page holds %d messages of %d bytes, budget %d", f.Type, len(msgs), size-1, cfg.MaxPageBytes)
	}
}

// pageBack asks for history before the oldest message c has (and after
// since, when set) while the reply says more, checks each reply against the
// budget, and returns the messages oldest first.
func pageBack(t *testing.T, c *wstest.Client, cfg ws.Config, room string, have []wstest.Frame, since string) []wstest.Frame {
	t.Helper()
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("paging does not end")
		}
		req := map[string]any{"type": "history", "room": room, "before": have[0].Seq, "limit": ws.MaxHistory, "ref": fmt.Sprint("h", i)}
		if since != "" {
			req["after"] = since
		}
		if err := c.Send(req); err != nil {
			t.Fatal(err)
		}
		f, err := c.Await("history", wait)
		if err != nil {
			t.Fatal(err)
		}
		checkBudget(t, cfg, f)
		if len(f.Messages) == 0 && f.More {
			t.Fatalf("empty history page says more: %s", f.Raw)
		}
		have = append(slices.Clone(f.Messages), have...)
		if !f.More {
			return have
		}
	}
}

func texts(fs []wstest.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Text
	}
	return out
}

// TestPagesWithinBudget: joined and history replies carry at most
// MaxPageMessages messages and MaxPageBytes of them, the newest of the range
// asked for, and say more while older ones of the range remain; paging
// back with history (after since, for a resume) gets each message of the
// range once, and live messages follow joined without a gap.
func TestPagesWithinBudget(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  ws.Config
		// n texts of size bytes are stored; the client joins with
		// history (when since is -1) or with since the seq of message
		// since, and pages back.
		n, size, history, since int
	}{
		{name: "history join, byte budget", cfg: ws.Config{MaxPageBytes: 8 << 10}, n: 40, size: 1000, history: 30, since: -1},
		{name: "since join, byte budget", cfg: ws.Config{MaxPageBytes: 8 << 10}, n: 40, size: 1000, since: 9},
		{name: "since 0-0, byte budget", cfg: ws.Config{MaxPageBytes: 8 << 10}, n: 40, size: 1000, since: -2},
		{name: "history join, message budget", cfg: ws.Config{MaxPageMessages: 4}, n: 30, size: 10, history: 25, since: -1},
		{name: "since join, message budget", cfg: ws.Config{MaxPageMessages: 4}, n: 30, size: 10, since: 3},
		{name: "messages larger than the byte budget", cfg: ws.Config{MaxPageBytes: 1 << 10}, n: 6, size: 3000, since: 1},
		{name: "everything fits", cfg: ws.Config{}, n: 30, size: 100, since: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.FrameRate, cfg.FrameBurst = 1000, 1000
			h := startKeeping(t, 1000, cfg)
			all := repeated(tc.n, tc.size, "\"") // each quote is sent escaped, as two bytes
			acks := fill(t, h, "paging", all)
			// The budgets as the gateway fills them in.
			if cfg.MaxPageMessages == 0 {
				cfg.MaxPageMessages = ws.DefaultMaxPageMessages
			}
			if cfg.MaxPageBytes == 0 {
				cfg.MaxPageBytes = ws.DefaultMaxPageBytes
			}

			c := h.dial(t, "reader")
			req := map[string]any{"type": "join", "room": "paging", "ref": "j"}
			want, since := all, ""
			switch {
			case tc.since >= 0:
				since = acks[tc.since].Seq
				want = all[tc.since+1:]
			case tc.since == -2:
				since = "0-0"
			default:
				req["history"] = tc.history
				want = all[len(all)-tc.history:]
			}
			if since != "" {
				req["since"] = since
			}
			if err := c.Send(req); err != nil {
				t.Fatal(err)
			}
			joined, err := c.Await("joined", wait)
			if err != nil {
				t.Fatal(err)
			}
			checkBudget(t, cfg, joined)
			if joined.Truncated {
				t.Errorf("joined says truncated: %s", joined.Raw)
			}
			fits := len(joined.History) == len(want)
			if more := strings.Contains(joined.Raw, `"more":true`); more == fits {
				t.Fatalf("joined holds %d of %d messages and more=%v", len(joined.History), len(want), more)
			}
			if len(joined.History) == 0 {
				t.Fatal("joined holds no message")
			}
			// Live messages follow joined at once, before any paging.
			writer := h.dial(t, "writer")
			join(t, writer, "paging", 0)
			say(t, writer, "paging", "live", "w1")
			live := collect(t, c, "paging", 1)

			got := joined.History
			if !fits {
				got = pageBack(t, c, cfg, "paging", got, since)
			}
			if tc.since < 0 && tc.since != -2 {
				got = got[len(got)-min(len(got), tc.history):] // a history join's range is the newest n
			}
			if g, w := texts(append(got, live...)), append(slices.Clone(want), "live"); !slices.Equal(g, w) {
				t.Fatalf("got %d messages %.80q, want %d %.80q", len(g), g, len(w), w)
			}
		})
	}
}

// TestErrorFramesQuoteLittle: an error frame repeats at most MaxQuoteBytes
// of any value of the client's frame, cut on a UTF-8 boundary, however
// large the value: a 65 KB type is answered in a few hundred bytes.
func TestErrorFramesQuoteLittle(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{FrameRate: 1000, FrameBurst: 1000})
	c := h.dial(t, "alice")
	join(t, c, "lobby", 0)
	const filler = "é" // two bytes: a cut must not split it
	huge := strings.Repeat(filler, 32_500)
	cases := []struct {
		name, frame, code string
	}{
		{"65 KB type", `{"type":"` + huge + `","ref":"r1"}`, ws.CodeBadFrame},
		{"65 KB invalid room", `{"type":"join","room":"` + huge + `","ref":"r2"}`, pipeline.CodeInvalid},
		{"65 KB room of a frame that does not decode", `{"type":"send","room":"` + huge + `","text":5}`, ws.CodeBadFrame},
		{"65 KB invalid ref", `{"type":"send","room":"lobby","text":"x","ref":"` + huge + `"}`, pipeline.CodeInvalid},
		{"60 KB number", `{"type":"history","room":"lobby","limit":` + strings.Repeat("9", 60_000) + `}`, ws.CodeBadFrame},
		{"60 KB string for a number", `{"type":"history","room":"lobby","limit":"` + huge[:60_000] + `"}`, ws.CodeBadFrame},
		{"ref of 64 two-byte characters", `{"type":"send","room":"elsewhere","text":"x","ref":"` + strings.Repeat(filler, pipeline.MaxRefLen) + `"}`, ws.CodeNotJoined},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.SendRaw(websocket.TextMessage, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			f, err := c.Await("error", wait)
			if err != nil {
				t.Fatal(err)
			}
			if f.Code != tc.code {
				t.Errorf("code = %s, want %s: %.300s", f.Code, tc.code, f.Raw)
			}
			for field, v := range map[string]string{"ref": f.Ref, "room": f.Room} {
				if len(v) > ws.MaxQuoteBytes || !utf8.ValidString(v) || strings.ContainsRune(v, utf8.RuneError) {
					t.Errorf("%s = %q (%d bytes), want at most %d bytes cut on a character", field, v, len(v), ws.MaxQuoteBytes)
				}
			}
			for _, quoted := range []string{filler, "9"} {
				if n := strings.Count(f.Message, quoted) * len(quoted); n > ws.MaxQuoteBytes {
					t.Errorf("message quotes %d bytes of the value: %.300q", n, f.Message)
				}
			}
			if strings.ContainsRune(f.Message, utf8.RuneError) {
				t.Errorf("message cuts a character: %q", f.Message)
			}
			if len(f.Raw) > 512 {
				t.Errorf("error frame is %d bytes: %.300s", len(f.Raw), f.Raw)
			}
		})
	}
	say(t, c, "lobby", "still here", "ok")
}

// TestHistoryBudget: the history a connection is sent is budgeted in bytes.
// Once replies have spent it, a history or join frame is answered
// rate_limited with its ref, room and the time until the budget is paid
// back, and nothing else changes: a refused rejoin keeps the membership, a
// refused join of a new room adds none. After that time history is served
// again.
func TestHistoryBudget(t *testing.T) {
	t.Parallel()
	const page = 4 << 10
	cfg := ws.Config{MaxPageBytes: page, HistoryBurst: 2 * page, HistoryRate: page / 2, FrameRate: 1000, FrameBurst: 1000}
	h := startKeeping(t, 1000, cfg)
	acks := fill(t, h, "hist", repeated(40, 1000, "x"))
	newest := acks[len(acks)-1].Seq

	c := h.dial(t, "reader")
	join(t, c, "hist", 0)
	ask := func(ref string) wstest.Frame {
		t.Helper()
		if err := c.Send(map[string]any{"type": "history", "room": "hist", "before": newest, "limit": ws.MaxHistory, "ref": ref}); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref }, wait)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// The first refusal of a spell names the debt, at most one page: 2 s.
	refused := func(f wstest.Frame, ref, room string, most int64) {
		t.Helper()
		if f.Type != "error" || f.Code != "rate_limited" || f.Ref != ref || f.Room != room || f.Retry < 1 || f.Retry > most {
			t.Fatalf("got %s, want rate_limited for %s in %s with retry_after_ms in 1..%d", f.Raw, ref, room, most)
		}
	}
	var limited wstest.Frame
	served := 0
	for i := 0; limited.Type == ""; i++ {
		if i == 10 {
			t.Fatalf("%d pages of about %d bytes served with a burst of %d", served, page, 2*page)
		}
		switch f := ask(fmt.Sprint("h", i)); f.Type {
		case "history":
			if len(f.Messages) == 0 {
				t.Fatalf("empty page: %s", f.Raw)
			}
			served++
		default:
			refused(f, fmt.Sprint("h", i), "hist", 2100)
			limited = f
		}
	}
	if served < 2 || served > 3 {
		t.Fatalf("%d pages of about %d bytes served before the refusal, want the burst of %d: 2 or 3", served, page, 2*page)
	}
	time.Sleep(time.Duration(limited.Retry) * time.Millisecond)
	if f := ask("after"); f.Type != "history" || len(f.Messages) == 0 {
		t.Fatalf("after retry_after_ms: %s, want a page", f.Raw)
	}

	// That page spent the budget again. The second refusal of the spell
	// is named a page's refill (2 s) after the first.
	for i, room := range []string{"hist", "other"} {
		if err := c.Send(map[string]any{"type": "join", "room": room, "ref": "j-" + room}); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == "j-"+room }, wait)
		if err != nil {
			t.Fatal(err)
		}
		refused(f, "j-"+room, room, 2100+int64(i)*2100)
	}
	writer := h.dial(t, "writer")
	join(t, writer, "hist", 0)
	say(t, writer, "hist", "still here", "w1")
	if got := texts(collect(t, c, "hist", 1)); got[0] != "still here" {
		t.Fatalf("after the refused rejoin got %q", got)
	}
	if err := c.Send(map[string]any{"type": "history", "room": "other", "limit": 1, "ref": "o"}); err != nil {
		t.Fatal(err)
	}
	if f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == "o" }, wait); err != nil || f.Code != "not_joined" {
		t.Fatalf("history of the refused room: %+v, %v; want not_joined", f, err)
	}
}

// TestHistoryBudgetSpread checks that requests refused together over the
// history budget are told to come back one after another, a reply's worth
// of budget apart, so that each is served when it does.
func TestHistoryBudgetSpread(t *testing.T) {
	t.Parallel()
	const page = 4 << 10
	// A page's refill (about 2 s) is the debt the herd below finds, long
	// enough for all of it to arrive while it is unpaid on a slow machine
	// busy with other tests (half that was not, once).
	const rate = 2 << 10
	// The burst (16 s of refill) bounds how far apart a spell's refusals
	// are spread: more than the herd below needs.
	cfg := ws.Config{MaxPageBytes: page, HistoryBurst: 8 * page, HistoryRate: rate, FrameRate: 1000, FrameBurst: 1000}
	h := startKeeping(t, 1000, cfg)
	acks := fill(t, h, "hist", repeated(40, 1000, "x"))
	newest := acks[len(acks)-1].Seq

	c := h.dial(t, "reader")
	join(t, c, "hist", 0)
	send := func(ref string) {
		t.Helper()
		if err := c.Send(map[string]any{"type": "history", "room": "hist", "before": newest, "limit": ws.MaxHistory, "ref": ref}); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(ref string) wstest.Frame {
		t.Helper()
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref }, wait)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// Spend the budget; the last page served tells a reply's cost.
	var pageBytes int
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("the budget was never spent")
		}
		ref := fmt.Sprint("h", i)
		send(ref)
		f := answer(ref)
		if f.Type != "history" {
			break
		}
		pageBytes = len(f.Raw)
	}
	if pageBytes == 0 {
		t.Fatal("no page was served before the budget was spent")
	}
	slot := time.Duration(pageBytes) * time.Second / rate

	// A herd: four requests at once, all refused.
	const herd = 4
	for i := range herd {
		send(fmt.Sprint("s", i))
	}
	due := make([]time.Time, herd)
	for i := range herd {
		f := answer(fmt.Sprint("s", i))
		if f.Type != "error" || f.Code != "rate_limited" || f.Retry < 1 {
			t.Fatalf("request %d of the herd: got %s, want rate_limited with retry_after_ms", i, f.Raw)
		}
		due[i] = f.Received.Add(time.Duration(f.Retry) * time.Millisecond)
		if i > 0 && due[i].Sub(due[i-1]) < slot/2 {
			t.Fatalf("request %d is told to come back %v after request %d, want about a page's refill (%v) apart", i, due[i].Sub(due[i-1]), i-1, slot)
		}
	}
	// Each asks again when told: each is served (one refused again is
	// let pass, for a slow machine: without the spread, all but one are).
	refused := 0
	for i := range herd {
		time.Sleep(time.Until(due[i]))
		ref := fmt.Sprint("a", i)
		send(ref)
		if f := answer(ref); f.Type != "history" {
			refused++
		}
	}
	if refused > 1 {
		t.Fatalf("%d of %d requests refused again when they came back as told", refused, herd)
	}
}
