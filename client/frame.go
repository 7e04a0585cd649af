package client

import (
	"bytes"
	"encoding/json"
	"time"
)

// Frame types of protocol v1 (docs/PROTOCOL.md §1).
const (
	typeJoin     = "join"
	typeJoined   = "joined"
	typeLeave    = "leave"
	typeLeft     = "left"
	typeSend     = "send"
	typeAck      = "ack"
	typeMessage  = "message"
	typeError    = "error"
	typeHistory  = "history"
	typePresence = "presence"
)

// Close codes the client acts on (docs/PROTOCOL.md §10); every other close
// reconnects.
const (
	// closeTooLarge (1009): a client frame was over the server's read limit.
	closeTooLarge = 1009
	// closeUnauthorized (4001, reserved for authentication) stops the
	// client with ErrUnauthorized.
	closeUnauthorized = 4001
	// closeTokenExpired (4002, reserved for authentication) reconnects
	// after the shortest backoff with a fresh Config.Token.
	closeTokenExpired = 4002
)

// clientFrame is a frame the client writes; empty fields are left out.
// Servers ignore fields they do not know, so Epoch and After are safe to
// send to servers that predate them.
type clientFrame struct {
	Type    string `json:"type"`
	Room    string `json:"room,omitempty"`
	Ref     string `json:"ref,omitempty"`
	Text    string `json:"text,omitempty"`
	History *int   `json:"history,omitempty"`
	Since   string `json:"since,omitempty"`
	Epoch   string `json:"epoch,omitempty"`
	Before  string `json:"before,omitempty"`
	After   string `json:"after,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// encodeFrame marshals f without HTML escaping (a "<" would otherwise cost
// six bytes of the frame limit). Client frames are strings and numbers, so
// it cannot fail.
func encodeFrame(f clientFrame) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		panic("client: encoding a client frame: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

// serverFrame is any server frame; fields its type does not use are zero.
// Unknown fields are ignored (docs/PROTOCOL.md §2).
type serverFrame struct {
	Type string `json:"type"`
	wireMessage
	Code         string        `json:"code"`
	Message      string        `json:"message"`
	Moderator    string        `json:"moderator"`
	RetryAfterMS int64         `json:"retry_after_ms"`
	History      []wireMessage `json:"history"`
	Messages     []wireMessage `json:"messages"`
	More         bool          `json:"more"`
	Truncated    bool          `json:"truncated"`
	// Reset and Epoch are v1 additions of joined: the room's stored data
	// was lost, and the token that names the room's current data.
	Reset bool   `json:"reset"`
	Epoch string `json:"epoch"`
}

// wireMessage is a stored message as the server sends it.
type wireMessage struct {
	Room string `json:"room"`
	ID   string `json:"id"`
	Seq  string `json:"seq"`
	User string `json:"user"`
	Text string `json:"text"`
	TS   string `json:"ts"`
	Ref  string `json:"ref"`
	// Epoch is the room's epoch the message was stored in ("" from an
	// older server).
	Epoch string `json:"epoch"`
}

func (m wireMessage) message() Message {
	ts, _ := time.Parse(time.RFC3339Nano, m.TS) // zero if the server sent none
	return Message{Room: m.Room, ID: m.ID, Seq: m.Seq, User: m.User, Text: m.Text, Ref: m.Ref, Time: ts}
}
