package ws_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/ws"
)

// The shape of FuzzConnection's inputs: frames separated by frameSep; a
// frame that starts with kindBinary is sent as a binary message, one that
// starts with kindPing as a ping (both without that byte), any other as a
// text message.
const (
	frameSep   = 0x1e
	kindBinary = 0x01
	kindPing   = 0x02
	// maxFuzzFrames bounds the frames of one input.
	maxFuzzFrames = 32
	// fuzzReadLimit is the gateway's read limit under fuzzing, small
	// enough for inputs to cross it.
	fuzzReadLimit = 2 << 10
)

// fuzzConfig makes every frame count without ever being rate limited, so
// that each one gets its answer, with small budgets that inputs can fill.
var fuzzConfig = ws.Config{
	ReadLimit: fuzzReadLimit, MaxRooms: 3,
	FrameRate: 1e6, FrameBurst: 1e6, FloodFactor: 1e3,
	MaxPageMessages: 5, MaxPageBytes: 1 << 10, SendQueueBytes: 64 << 10,
}

// connectionSeeds are the in-code seeds of FuzzConnection: whole sessions,
// one frame per element.
var connectionSeeds = [][]string{
	{`{"type":"join","room":"fz","history":50,"ref":"j"}`, `{"type":"send","room":"fz","text":"hi","ref":"s"}`,
		`{"type":"history","room":"fz","limit":3,"ref":"h"}`, `{"type":"leave","room":"fz","ref":"l"}`},
	{`{"type":"join","room":"fz","since":"0-0"}`, `{"type":"send","room":"fz","text":"` + strings.Repeat("<", 600) + `"}`,
		`{"type":"send","room":"fz","text":"` + strings.Repeat(`\"`, 600) + `"}`, `{"type":"join","room":"fz","since":"1-0","ref":"again"}`,
		`{"type":"history","room":"fz","before":"99999999999999-0","after":"1-0","limit":500}`},
	{`{"type":"send","room":"nope","text":"x","ref":"r"}`, `{"type":"leave","room":"nope"}`, `{"type":"history","room":"nope"}`},
	{`{"type":"join","room":"a"}`, `{"type":"join","room":"b"}`, `{"type":"join","room":"c"}`, `{"type":"join","room":"d","ref":"over"}`},
	{"\x01{\"type\":\"join\",\"room\":\"fz\"}", "\x02ping", `not json`, `{"type":"` + strings.Repeat("t", 300) + `"}`, `{"type":"join","room":"fz"}`},
	{`{"type":"send","room":"fz","text":5,"ref":"` + strings.Repeat("é", 64) + `"}`, `{"type":"history","room":"fz","limit":` + strings.Repeat("9", 200) + `}`},
	{`{"type":"join","room":"fz"}`, `{"type":"send","room":"fz","text":"` + strings.Repeat("x", fuzzReadLimit) + `"}`, `{"type":"leave","room":"fz"}`},
}

func joinFrames(frames []string) []byte {
	return []byte(strings.Join(frames, string(rune(frameSep))))
}

// FuzzConnection sends each input, split into frames, over a real
// WebSocket to a gateway with the memory backend, and checks, for any
// input: no panic; every frame but a ping gets exactly one answer, in
// order, the one a model of the protocol expects (a send an ack or an
// error, a join joined or an error, ...) with its ref quoted within
// MaxQuoteBytes; every page keeps to MaxPageMessages and MaxPageBytes;
// a frame over the read limit closes the connection with 1009 (a close that
// may overtake the answers still queued, PROTOCOL.md §11.2); and no send
// queue ever holds more than SendQueueBytes.
func FuzzConnection(f *testing.F) {
	for _, s := range connectionSeeds {
		f.Add(joinFrames(s))
	}
	h := start(f, fuzzConfig)
	var panicked atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				panicked.Store(fmt.Sprint(p))
				panic(p)
			}
		}()
		h.gw.ServeHTTP(w, r)
	}))
	f.Cleanup(srv.Close)
	var users atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := bytes.Split(data, []byte{frameSep})
		if len(frames) > maxFuzzFrames {
			frames = frames[:maxFuzzFrames]
		}
		c := newRawClientAt(t, srv.URL, fmt.Sprint("fuzz", users.Add(1)))
		// A gateway that stops reading fails the input instead of hanging it.
		if err := c.conn.SetWriteDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		m := connModel{t: t, joined: map[string]bool{}}
		var want []answer
		tooLarge := false
		for _, fr := range frames {
			kind, payload := websocket.TextMessage, fr
			if len(fr) > 0 && (fr[0] == kindBinary || fr[0] == kindPing) {
				payload = fr[1:]
				kind = map[byte]int{kindBinary: websocket.BinaryMessage, kindPing: websocket.PingMessage}[fr[0]]
			}
			var err error
			if kind == websocket.PingMessage {
				if len(payload) > 125 { // the control frame limit
					payload = payload[:125]
				}
				err = c.conn.WriteControl(websocket.PingMessage, payload, time.Now().Add(wait))
			} else {
				err = c.conn.WriteMessage(kind, payload)
			}
			if err != nil && len(payload) > fuzzReadLimit && kind != websocket.PingMessage {
				// The gateway closes (1009) and drops the connection as
				// soon as a frame passes its read limit, possibly while the
				// rest of it is still being written.
				tooLarge = true
				break
			}
			if err != nil {
				t.Fatalf("writing frame %d: %v", len(want), err)
			}
			if len(payload) > fuzzReadLimit && kind != websocket.PingMessage {
				tooLarge = true
				break
			}
			switch kind {
			case websocket.BinaryMessage:
				want = append(want, answer{codes: []string{ws.CodeBadFrame}})
			case websocket.TextMessage:
				want = append(want, m.expect(payload))
			}
		}
		for i, a := range want {
			got, ok := c.nextReply(t)
			if !ok && tooLarge {
				break // the 1009 close may overtake answers still queued
			}
			if !ok {
				t.Fatalf("connection ended after %d of %d answers: %v", i, len(want), c.err)
			}
			m.check(i, a, got)
		}
		if tooLarge {
			for range c.frames {
			}
			var ce *websocket.CloseError
			if !errors.As(c.err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Fatalf("a frame over the read limit ended the connection with %v, want 1009", c.err)
			}
		}
		if p := panicked.Load(); p != nil {
			t.Fatalf("the gateway panicked: %v", p)
		}
		if got := h.hub.MaxQueuedBytes(); got > int64(fuzzConfig.SendQueueBytes) {
			t.Fatalf("a send queue held %d bytes, budget %d", got, fuzzConfig.SendQueueBytes)
		}
	})
}

// answer is what a model expects for one frame: a frame of type typ, or an
// error with one of codes; ref and room are the frame's, as they were
// decoded (quoted within MaxQuoteBytes by the answer).
type answer struct {
	typ       string
	codes     []string
	ref, room string
}

// connModel predicts the answers of one connection from its frames. It
// takes every join to succeed: the memory backend does not fail.
type connModel struct {
	t *testing.T
	// joined holds the rooms the connection is in after the frames so far.
	joined map[string]bool
}

// expect returns the answer to a text frame, given the frames before it.
func (m *connModel) expect(data []byte) answer {
	fr, perr := ws.DecodeFrame(data)
	a := answer{ref: fr.Ref, room: fr.Room}
	if perr != nil {
		a.codes = []string{perr.Code}
		return a
	}
	in := m.joined[fr.Room]
	switch {
	case fr.Type == ws.TypeJoin && !in && len(m.joined) >= fuzzConfig.MaxRooms:
		a.codes = []string{ws.CodeRoomLimit}
	case fr.Type == ws.TypeJoin:
		a.typ = ws.TypeJoined
		m.joined[fr.Room] = true
	case !in:
		a.codes = []string{ws.CodeNotJoined}
	case fr.Type == ws.TypeLeave:
		a.typ = ws.TypeLeft
		delete(m.joined, fr.Room)
	case fr.Type == ws.TypeHistory:
		a.typ = ws.TypeHistory
	case fr.Type == ws.TypeSend:
		a.typ = ws.TypeAck
		a.codes = []string{pipeline.CodeTooLarge, pipeline.CodeInvalid, pipeline.CodeUnavailable, pipeline.CodeInternal}
	}
	return a
}

// check compares the i-th answer with what the model expected.
func (m *connModel) check(i int, want answer, got wstest.Frame) {
	t := m.t
	t.Helper()
	if !(got.Type == want.typ && want.typ != "" || got.Type == ws.TypeError && contains(want.codes, got.Code)) {
		t.Fatalf("answer %d = %.300s, want %q or an error %v", i, got.Raw, want.typ, want.codes)
	}
	if !quoted(want.ref, got.Ref) || !quoted(want.room, got.Room) {
		t.Fatalf("answer %d = %.300s, want ref %q and room %q quoted", i, got.Raw, want.ref, want.room)
	}
	switch got.Type {
	case ws.TypeJoined, ws.TypeHistory:
		checkBudget(t, fuzzConfig, got)
	case ws.TypeError:
		if len(got.Raw) > 2*ws.MaxReasonBytes {
			t.Fatalf("answer %d is an error frame of %d bytes", i, len(got.Raw))
		}
	}
}

// quoted reports whether got is v as an answer quotes it: whole, or cut to
// at most MaxQuoteBytes when longer.
func quoted(v, got string) bool {
	if len(v) <= ws.MaxQuoteBytes {
		return got == v
	}
	return len(got) <= ws.MaxQuoteBytes && strings.HasPrefix(v, got) && len(got) > ws.MaxQuoteBytes-4
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// nextReply returns the next frame that answers a client frame, skipping
// messages and presence, or false when the connection ended first.
func (c *rawClient) nextReply(t *testing.T) (wstest.Frame, bool) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return f, false
			}
			if f.Type != ws.TypeMessage && f.Type != ws.TypePresence {
				return f, true
			}
		case <-timeout:
			t.Fatal("no answer")
		}
	}
}
