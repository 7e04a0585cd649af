package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/chatstream/chatstream/pipeline"
)

// Frame types of protocol v1 (docs/PROTOCOL.md).
const (
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
	// Before and Limit page older history (type history).
	Before string `json:"before,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// Text is the message of a send.
	Text string `json:"text,omitempty"`
	Ref  string `json:"ref,omitempty"`
}

// DecodeFrame parses and checks one client text frame. The returned error
// carries the code and reason for the client's error frame; on error the
// frame's ref and room are still set when they could be read. Message text is
// checked by the pipeline, not here.
func DecodeFrame(data []byte) (ClientFrame, *pipeline.Error) {
	var f ClientFrame
	if !utf8.Valid(data) {
		return f, pipeline.Errorf(pipeline.CodeInvalid, "frame is not valid UTF-8")
	}
	if err := decodeStrict(data, &f); err != nil {
		return salvage(data), pipeline.Errorf(CodeBadFrame, "frame is not a JSON object of the protocol: %v", err)
	}
	if err := pipeline.ValidateRef(f.Ref); err != nil {
		f.Ref = ""
		return f, asProtocolError(err)
	}
	switch f.Type {
	case TypeJoin, TypeLeave, TypeSend, TypeHistory:
	case "":
		return f, pipeline.Errorf(CodeBadFrame, "frame has no type")
	default:
		return f, pipeline.Errorf(CodeBadFrame, "unknown frame type %q", f.Type)
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
	case TypeHistory:
		if f.Before != "" {
			if _, err := pipeline.ParseSeq(f.Before); err != nil {
				return f, pipeline.Errorf(pipeline.CodeInvalid, "before must be the seq of a message")
			}
		}
		if f.Limit < 0 || f.Limit > MaxHistory {
			return f, pipeline.Errorf(pipeline.CodeInvalid, "limit must be between 0 and %d", MaxHistory)
		}
	}
	return f, nil
}

// decodeStrict decodes one JSON object into f with field names matched
// exactly (encoding/json alone would accept "TYPE" for "type"); unknown
// fields are ignored so that clients may send newer fields.
func decodeStrict(data []byte, f *ClientFrame) error {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&fields); err != nil {
		return err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return errors.New("one JSON object per frame")
	}
	if fields == nil {
		return errors.New("frame is null")
	}
	targets := map[string]any{
		"type": &f.Type, "room": &f.Room, "history": &f.History, "since": &f.Since,
		"before": &f.Before, "limit": &f.Limit, "text": &f.Text, "ref": &f.Ref,
	}
	for name, raw := range fields {
		target, known := targets[name]
		if !known {
			continue
		}
		if err := json.Unmarshal(raw, target); err != nil {
			return fmt.Errorf("field %s: %w", name, err)
		}
	}
	return nil
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
}

func toWire(m pipeline.Message) wireMessage {
	return wireMessage{
		Type: TypeMessage, Room: m.Room, ID: m.ID, Seq: m.Seq, User: m.User,
		Text: m.Text, TS: m.TS.UTC().Format(pipeline.TimeFormat), Ref: m.Ref,
	}
}

func toWireList(ms []pipeline.Message) []wireMessage {
	out := make([]wireMessage, len(ms))
	for i, m := range ms {
		out[i] = toWire(m)
	}
	return out
}

type joinedFrame struct {
	Type      string        `json:"type"`
	Room      string        `json:"room"`
	Ref       string        `json:"ref,omitempty"`
	History   []wireMessage `json:"history"`
	Truncated bool          `json:"truncated,omitempty"`
}

type historyFrame struct {
	Type     string        `json:"type"`
	Room     string        `json:"room"`
	Ref      string        `json:"ref,omitempty"`
	Messages []wireMessage `json:"messages"`
	More     bool          `json:"more"`
}

type ackFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	Room string `json:"room"`
	ID   string `json:"id"`
	Seq  string `json:"seq"`
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

type leftFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Ref  string `json:"ref,omitempty"`
}

// encode marshals a server frame. Server frames are plain structs of strings
// and numbers, so marshalling cannot fail.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("ws: encoding a server frame: " + err.Error())
	}
	return b
}

func errFrame(e *pipeline.Error, ref, room string) []byte {
	return encode(errorFrame{
		Type: TypeError, Code: e.Code, Message: e.Reason, Ref: ref, Room: room,
		RetryAfterMS: e.RetryAfter.Milliseconds(), Moderator: e.Moderator,
	})
}
