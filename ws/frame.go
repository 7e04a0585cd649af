package ws

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/chatstream/chatstream/pipeline"
)

// Frame types of protocol v1.1 (docs/PROTOCOL.md).
const (
	// TypeAuth (v1.1) carries a token; TypeAuthed answers it.
	TypeAuth     = "auth"
	TypeAuthed   = "authed"
	TypeJoin     = "join"
	TypeLeave    = "leave"
	TypeSend     = "send"
	TypeHistory  = "history"
	TypeJoined   = "joined"
	TypeMessage  = "message"
	TypeAck      = "ack"
	TypeError    = "error"
	TypeLeft     = "left"
	TypePresence = "presence"
	// TypePing (a v1 addition) asks for a TypePong: a client's check that
	// the connection still carries frames both ways.
	TypePing = "ping"
	TypePong = "pong"
)

// Protocol limits on join and history requests.
const (
	// DefaultHistory is the number of messages a join returns when it names none.
	DefaultHistory = 50
	// MaxHistory is the most messages a join or history request returns.
	MaxHistory = 500
)

// ClientFrame is a decoded client → server frame. Fields that a type does
// not use are zero.
type ClientFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	// History is the number of messages wanted on join (nil = default).
	History *int `json:"history,omitempty"`
	// Since resumes a join after this seq.
	Since string `json:"since,omitempty"`
	// Epoch (a v1 addition) is the room epoch since belongs to (joined's
	// epoch); a join whose epoch is not the room's gets a reset.
	Epoch string `json:"epoch,omitempty"`
	// Before and Limit page older history (type history); After, a v1
	// addition, keeps the page above a seq (a since resume fills its gap
	// down to its since and no further).
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// Text is the message of a send.
	Text string `json:"text,omitempty"`
	Ref  string `json:"ref,omitempty"`
	// Token (v1.1) is the token of an auth frame.
	Token string `json:"token,omitempty"`
}

// MaxEpochLen is the longest epoch a join may carry, in bytes; the
// server's epochs are far shorter.
const MaxEpochLen = 64

// MaxTokenBytes is the longest token an auth frame may carry.
const MaxTokenBytes = 8 << 10

// DecodeFrame parses and checks one client text frame. The returned error
// carries the code and reason for the client's error frame; on error the
// frame's ref and room are still set when they could be read. Message text is
// checked by the pipeline, not here. The frame and the error share no memory
// with data, which the caller may reuse once DecodeFrame returns.
func DecodeFrame(data []byte) (ClientFrame, *pipeline.Error) {
	var f ClientFrame
	if !utf8.Valid(data) {
		return f, pipeline.Errorf(pipeline.CodeInvalid, "frame is not valid UTF-8")
	}
	if err := decodeFields(data, &f); err != nil {
		return salvage(data), pipeline.Errorf(CodeBadFrame, "frame is not a JSON object of the protocol: %s", describeJSONError(err))
	}
	return checkFrame(f)
}

// checkFrame checks the fields of a decoded frame against the protocol.
func checkFrame(f ClientFrame) (ClientFrame, *pipeline.Error) {
	if err := pipeline.ValidateRef(f.Ref); err != nil {
		f.Ref = ""
		return f, asProtocolError(err)
	}
	switch f.Type {
	case TypeAuth:
		// The only frame without a room.
		if f.Token == "" {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "auth frame has no token")
		}
		if len(f.Token) > MaxTokenBytes {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "token is longer than %d bytes", MaxTokenBytes)
		}
		return f, nil
	case TypePing:
		return f, nil // no room: any room given is ignored
	case TypeJoin, TypeLeave, TypeSend, TypeHistory:
	case "":
		return f, pipeline.Errorf(CodeBadFrame, "frame has no type")
	default:
		return f, pipeline.Errorf(CodeBadFrame, "unknown frame type %q", clip(f.Type, MaxQuoteBytes))
	}
	if err := pipeline.ValidateRoom(f.Room); err != nil {
		return f, asProtocolError(err)
	}
	switch f.Type {
	case TypeJoin:
		if f.History != nil && (*f.History < 0 || *f.History > MaxHistory) {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "history must be between 0 and %d", MaxHistory)
		}
		if f.Since != "" {
			if _, err := pipeline.ParseSeq(f.Since); err != nil {
				return f, pipeline.Errorf(pipeline.CodeInvalid, "since must be the seq of a message")
			}
		}
		if len(f.Epoch) > MaxEpochLen {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "epoch is longer than %d bytes", MaxEpochLen)
		}
	case TypeHistory:
		if f.Before != "" {
			if _, err := pipeline.ParseSeq(f.Before); err != nil {
				return f, pipeline.Errorf(pipeline.CodeInvalid, "before must be the seq of a message")
			}
		}
		if f.After != "" {
			if _, err := pipeline.ParseSeq(f.After); err != nil {
				return f, pipeline.Errorf(pipeline.CodeInvalid, "after must be the seq of a message")
			}
		}
		if f.Limit < 0 || f.Limit > MaxHistory {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "limit must be between 0 and %d", MaxHistory)
		}
	}
	return f, nil
}

// salvage reads the ref and room of a frame that failed to decode, so the
// error can still name them; it keeps only values that are themselves valid.
func salvage(data []byte) ClientFrame {
	var probe map[string]json.RawMessage
	if json.Unmarshal(data, &probe) != nil {
		return ClientFrame{}
	}
	var f ClientFrame
	if json.Unmarshal(probe["ref"], &f.Ref) != nil || pipeline.ValidateRef(f.Ref) != nil {
		f.Ref = ""
	}
	if json.Unmarshal(probe["room"], &f.Room) != nil || pipeline.ValidateRoom(f.Room) != nil {
		f.Room = ""
	}
	return f
}

// wireMessage is a message frame (and an element of a history list).
type wireMessage struct {
	Type string `json:"type"`
	Room string `json:"room"`
	ID   string `json:"id"`
	Seq  string `json:"seq"`
	User string `json:"user"`
	Text string `json:"text"`
	TS   string `json:"ts"`
	Ref  string `json:"ref,omitempty"`
	// Epoch (a v1 addition) is the room's epoch the message was stored in.
	Epoch string `json:"epoch,omitempty"`
}

func toWire(m pipeline.Message) wireMessage {
	return wireMessage{
		Type: TypeMessage, Room: m.Room, ID: m.ID, Seq: m.Seq, User: m.User,
		Text: m.Text, TS: m.TS.UTC().Format(pipeline.TimeFormat), Ref: m.Ref, Epoch: m.Epoch,
	}
}

// joinedFrame and historyFrame carry a page of messages, each encoded once
// by the page reader (page.go) to count its bytes against the budget.
type joinedFrame struct {
	Type      string            `json:"type"`
	Room      string            `json:"room"`
	Ref       string            `json:"ref,omitempty"`
	History   []json.RawMessage `json:"history"`
	Truncated bool              `json:"truncated,omitempty"`
	// More (a v1 addition) reports that older messages of the requested
	// range were left out to keep the reply within the page budgets.
	More bool `json:"more,omitempty"`
	// Epoch (a v1 addition) is the room's epoch: it changes when the
	// room's stored data is lost. A client resumes with it beside since.
	Epoch string `json:"epoch,omitempty"`
	// Reset (a v1 addition) reports that the resume's since or epoch is
	// from data the room lost: History is the room's current state, and
	// the client drops what it kept of the room.
	Reset bool `json:"reset,omitempty"`
}

type historyFrame struct {
	Type     string            `json:"type"`
	Room     string            `json:"room"`
	Ref      string            `json:"ref,omitempty"`
	Messages []json.RawMessage `json:"messages"`
	More     bool              `json:"more"`
}

type ackFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	Room string `json:"room"`
	ID   string `json:"id"`
	Seq  string `json:"seq"`
	// Epoch (a v1 addition) is the room's epoch the message was stored in.
	Epoch string `json:"epoch,omitempty"`
}

type errorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Ref     string `json:"ref,omitempty"`
	Room    string `json:"room,omitempty"`
	// RetryAfterMS is set on rate_limited errors.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// Moderator names the moderator that rejected a message.
	Moderator string `json:"moderator,omitempty"`
}

// authedFrame (v1.1) answers an auth frame, or a header token.
type authedFrame struct {
	Type string `json:"type"`
	User string `json:"user"`
	Name string `json:"name,omitempty"`
	// Exp is when the token expires, RFC 3339 UTC.
	Exp string `json:"exp"`
	Ref string `json:"ref,omitempty"`
}

// pongFrame answers a ping.
type pongFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
}

type leftFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Ref  string `json:"ref,omitempty"`
}

// encode marshals a server frame. Server frames are plain structs of strings
// and numbers, so marshalling cannot fail. HTML characters are not escaped:
// frames are JSON for WebSocket clients, never HTML, and an escaped "<"
// ("\u003c") would make a message six times its size. Ack frames, one per
// send, are written by appendAck without encoding/json, to the same bytes;
// encode is generic so that they get there without being boxed.
func encode[F any](v F) []byte {
	switch f := any(v).(type) {
	case ackFrame:
		var stack [maxStackFrameBytes]byte
		return append([]byte(nil), appendAck(stack[:0], f)...)
	case wireMessage:
		var stack [maxStackFrameBytes]byte
		return append([]byte(nil), appendMessage(stack[:0], f)...)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("ws: encoding a server frame: " + err.Error())
	}
	b := buf.Bytes()
	// An exact-size copy without Encode's newline: queued frames are
	// counted by length, so they must not hold spare capacity.
	return append([]byte(nil), b[:len(b)-1]...)
}

// maxStackFrameBytes is the size of the buffer on the stack that appendAck
// and appendError write into before the frame is copied out at its length;
// a longer frame grows onto the heap.
const maxStackFrameBytes = 512

// appendAck appends the ack frame a as encode would marshal it with
// encoding/json, field for field.
func appendAck(dst []byte, a ackFrame) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, a.Type)
	if a.Ref != "" {
		dst = append(dst, `,"ref":`...)
		dst = appendJSONString(dst, a.Ref)
	}
	dst = append(dst, `,"room":`...)
	dst = appendJSONString(dst, a.Room)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, a.ID)
	dst = append(dst, `,"seq":`...)
	dst = appendJSONString(dst, a.Seq)
	if a.Epoch != "" {
		dst = append(dst, `,"epoch":`...)
		dst = appendJSONString(dst, a.Epoch)
	}
	return append(dst, '}')
}

// appendMessage appends the message frame m as encode would marshal it
// with encoding/json, field for field.
func appendMessage(dst []byte, m wireMessage) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, m.Type)
	dst = append(dst, `,"room":`...)
	dst = appendJSONString(dst, m.Room)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, m.ID)
	dst = append(dst, `,"seq":`...)
	dst = appendJSONString(dst, m.Seq)
	dst = append(dst, `,"user":`...)
	dst = appendJSONString(dst, m.User)
	dst = append(dst, `,"text":`...)
	dst = appendJSONString(dst, m.Text)
	dst = append(dst, `,"ts":`...)
	dst = appendJSONString(dst, m.TS)
	if m.Ref != "" {
		dst = append(dst, `,"ref":`...)
		dst = appendJSONString(dst, m.Ref)
	}
	if m.Epoch != "" {
		dst = append(dst, `,"epoch":`...)
		dst = appendJSONString(dst, m.Epoch)
	}
	return append(dst, '}')
}

// appendError appends the error frame e as encode would marshal it with
// encoding/json, field for field.
func appendError(dst []byte, e errorFrame) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, e.Type)
	dst = append(dst, `,"code":`...)
	dst = appendJSONString(dst, e.Code)
	dst = append(dst, `,"message":`...)
	dst = appendJSONString(dst, e.Message)
	if e.Ref != "" {
		dst = append(dst, `,"ref":`...)
		dst = appendJSONString(dst, e.Ref)
	}
	if e.Room != "" {
		dst = append(dst, `,"room":`...)
		dst = appendJSONString(dst, e.Room)
	}
	if e.RetryAfterMS != 0 {
		dst = append(dst, `,"retry_after_ms":`...)
		dst = strconv.AppendInt(dst, e.RetryAfterMS, 10)
	}
	if e.Moderator != "" {
		dst = append(dst, `,"moderator":`...)
		dst = appendJSONString(dst, e.Moderator)
	}
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string exactly as encoding/json
// writes it with HTML escaping off: '"', '\\' and control characters
// escaped (\b, \f, \n, \r, \t short, the others as \u00XX), U+2028 and
// U+2029 escaped, each byte of invalid UTF-8 replaced with \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= ' ' && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Limits on what an error frame repeats of the client's frame.
const (
	// MaxQuoteBytes is the most bytes of any one client value (ref, room,
	// type, a field's JSON value) that an error frame quotes; longer
	// values are cut on a UTF-8 boundary. It equals the longest valid
	// room name, so valid rooms and ASCII refs are always quoted whole.
	MaxQuoteBytes = 64
	// MaxReasonBytes caps an error frame's message, whoever wrote it (a
	// moderator's reason may come from a webhook).
	MaxReasonBytes = 1024
)

func errFrame(e *pipeline.Error, ref, room string) []byte {
	var stack [maxStackFrameBytes]byte
	return append([]byte(nil), appendError(stack[:0], errorFrame{
		Type: TypeError, Code: e.Code, Message: clip(e.Reason, MaxReasonBytes),
		Ref: clip(ref, MaxQuoteBytes), Room: clip(room, MaxQuoteBytes),
		RetryAfterMS: e.RetryAfter.Milliseconds(), Moderator: clip(e.Moderator, MaxQuoteBytes),
	})...)
}

// clip returns the longest prefix of s of at most max bytes that ends on a
// UTF-8 boundary.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// describeJSONError explains why a frame did not decode, quoting little of
// it.
func describeJSONError(err error) string {
	return clip(err.Error(), 2*MaxQuoteBytes)
}
