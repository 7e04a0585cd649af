package pipeline_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
)

// newMsg returns a Watermill message as Submit builds it: text as payload,
// room, user, conn id and ref in metadata.
func newMsg(room, user, ref, text string) *message.Message {
	m := message.NewMessage("msg-1", []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "conn-1")
	if ref != "" {
		m.Metadata.Set(pipeline.MetaRef, ref)
	}
	return m
}

// nextHandler is the handler behind a middleware under test: it counts its
// calls and returns err.
type nextHandler struct {
	calls int
	err   error
}

func (n *nextHandler) handle(*message.Message) ([]*message.Message, error) {
	n.calls++
	return nil, n.err
}

// wantCode checks that err is a *pipeline.Error with code and a reason.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var perr *pipeline.Error
	if !errors.As(err, &perr) {
		t.Fatalf("error = %v, want a *pipeline.Error with %q", err, code)
	}
	if perr.Code != code || perr.Reason == "" {
		t.Fatalf("error code %q reason %q, want %q with a reason", perr.Code, perr.Reason, code)
	}
}

// TestSizeLimit proves that SizeLimit passes text of exactly max bytes (in
// bytes of UTF-8, not characters) and refuses max+1 with CodeTooLarge
// without calling the next handler.
func TestSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 8
	cases := []struct {
		name string
		text string
		ok   bool
	}{
		{"empty", "", true},
		{"below max", "1234567", true},
		{"exactly max", "12345678", true},
		{"max+1", "123456789", false},
		{"max bytes of multibyte text", "éééé", true},
		{"max+1 bytes of multibyte text", "éééé!", false},
		{"few characters but too many bytes", "🎉🎉🎉", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := &nextHandler{}
			_, err := pipeline.SizeLimit(limit)(next.handle)(newMsg("lobby", "alice", "", tc.text))
			if tc.ok {
				if err != nil || next.calls != 1 {
					t.Fatalf("%d bytes: err %v, next called %d times; want nil and 1", len(tc.text), err, next.calls)
				}
				return
			}
			wantCode(t, err, pipeline.CodeTooLarge)
			if next.calls != 0 {
				t.Fatalf("next called %d times for a refused message", next.calls)
			}
		})
	}
}

// TestSizeLimitPassesNextError proves that SizeLimit returns the next
// handler's error unchanged.
func TestSizeLimitPassesNextError(t *testing.T) {
	t.Parallel()
	want := errors.New("downstream")
	next := &nextHandler{err: want}
	if _, err := pipeline.SizeLimit(10)(next.handle)(newMsg("lobby", "alice", "", "hi")); !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// TestValidate proves that Validate passes a good message to the next
// handler and refuses a bad room, user, ref or text with CodeInvalid
// without calling it.
func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                  string
		room, user, ref, text string
		ok                    bool
	}{
		{"valid", "lobby", "alice", "c-1", "hello", true},
		{"valid without ref", "lobby", "alice", "", "hello", true},
		{"empty room", "", "alice", "", "hello", false},
		{"bad room", "no spaces", "alice", "", "hello", false},
		{"long room", strings.Repeat("r", 65), "alice", "", "hello", false},
		{"empty user", "lobby", "", "", "hello", false},
		{"user with control", "lobby", "al\x00ice", "", "hello", false},
		{"long user", "lobby", strings.Repeat("u", 33), "", "hello", false},
		{"long ref", "lobby", "alice", strings.Repeat("f", 65), "hello", false},
		{"ref with control", "lobby", "alice", "a\x07", "hello", false},
		{"empty text", "lobby", "alice", "", "", false},
		{"blank text", "lobby", "alice", "", " \n\t ", false},
		{"text with control", "lobby", "alice", "", "a\x1bb", false},
		{"text with U+2028", "lobby", "alice", "", "a\u2028b", false},
		{"text not UTF-8", "lobby", "alice", "", "a\xffb", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := &nextHandler{}
			_, err := pipeline.Validate(next.handle)(newMsg(tc.room, tc.user, tc.ref, tc.text))
			if tc.ok {
				if err != nil || next.calls != 1 {
					t.Fatalf("err %v, next called %d times; want nil and 1", err, next.calls)
				}
				return
			}
			wantCode(t, err, pipeline.CodeInvalid)
			if next.calls != 0 {
				t.Fatalf("next called %d times for a refused message", next.calls)
			}
		})
	}
}

// logRecords runs one message with text through Logging, with a JSON logger
// at level, and returns the decoded log records and the raw log.
func logRecords(t *testing.T, level slog.Level, next *nextHandler, text string) ([]map[string]any, string) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
	msg := newMsg("lobby", "alice", "c-1", text)
	msg.Metadata.Set(pipeline.MetaCorrelationID, "corr-1")
	out, err := pipeline.Logging(log)(next.handle)(msg)
	if !errors.Is(err, next.err) || out != nil {
		t.Fatalf("Logging returned %v, %v; want the next handler's nil, %v", out, err, next.err)
	}
	if next.calls != 1 {
		t.Fatalf("next called %d times, want 1", next.calls)
	}
	var recs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs, buf.String()
}

// secretText is message text that must never appear in a log.
const secretText = "the-secret-text-3f9a7c"

// TestLoggingHandled proves that Logging logs a handled message once at
// debug level with its msg_id, room, user, conn_id and correlation_id, and
// never its text.
func TestLoggingHandled(t *testing.T) {
	t.Parallel()
	recs, raw := logRecords(t, slog.LevelDebug, &nextHandler{}, secretText)
	if len(recs) != 1 {
		t.Fatalf("got %d log records, want 1:\n%s", len(recs), raw)
	}
	r := recs[0]
	want := map[string]any{
		"level": "DEBUG", "msg_id": "msg-1", "room": "lobby", "user": "alice",
		"conn_id": "conn-1", "correlation_id": "corr-1",
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("log %s = %v, want %v in %s", k, r[k], v, raw)
		}
	}
	if _, ok := r["took"]; !ok {
		t.Errorf("log has no took: %s", raw)
	}
	if strings.Contains(raw, secretText) {
		t.Errorf("the message text was logged: %s", raw)
	}
}

// TestLoggingQuietCostsNothing proves that Logging, when its logger does
// not write debug records, adds no allocation to a message's handling: it
// runs for every message, and most deployments log at info.
func TestLoggingQuietCostsNothing(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	msg := newMsg("lobby", "alice", "c-1", "hello")
	next := func(*message.Message) ([]*message.Message, error) { return nil, nil }
	logged := pipeline.Logging(log)(next)
	if n := testing.AllocsPerRun(100, func() { _, _ = logged(msg) }); n != 0 {
		t.Errorf("Logging at info level allocates %v times per message, want 0", n)
	}
}

// TestLoggingRefused proves that Logging logs a refusal at debug level (a
// flood of refusals must not flood an info log) with the error and the
// message's ids, and never its text.
func TestLoggingRefused(t *testing.T) {
	t.Parallel()
	next := &nextHandler{err: pipeline.Errorf(pipeline.CodeRejected, "not allowed here")}
	quiet := &nextHandler{err: next.err}
	if recs, raw := logRecords(t, slog.LevelInfo, quiet, secretText); len(recs) != 0 {
		t.Fatalf("got %d log records at info level, want none:\n%s", len(recs), raw)
	}
	recs, raw := logRecords(t, slog.LevelDebug, next, secretText)
	if len(recs) != 1 {
		t.Fatalf("got %d log records, want 1:\n%s", len(recs), raw)
	}
	r := recs[0]
	for k, v := range map[string]any{"level": "DEBUG", "msg_id": "msg-1", "room": "lobby", "user": "alice"} {
		if r[k] != v {
			t.Errorf("log %s = %v, want %v in %s", k, r[k], v, raw)
		}
	}
	if e, _ := r["err"].(string); !strings.Contains(e, "not allowed here") {
		t.Errorf("log err = %v, want the refusal", r["err"])
	}
	if strings.Contains(raw, secretText) {
		t.Errorf("the message text was logged: %s", raw)
	}
}

// TestLoggingQuietAtInfo proves that a handled message logs nothing when the
// logger's level is info: per-message lines are debug only.
func TestLoggingQuietAtInfo(t *testing.T) {
	t.Parallel()
	recs, raw := logRecords(t, slog.LevelInfo, &nextHandler{}, "hello")
	if len(recs) != 0 {
		t.Fatalf("got %d log records at info level, want none:\n%s", len(recs), raw)
	}
}
