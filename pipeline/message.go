package pipeline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/names"
)

// Metadata keys set on every chat message. They are stored with the message
// (in the Redis entry's msgpack metadata) and documented in docs/PROTOCOL.md.
const (
	MetaRoom          = "room"
	MetaUser          = "user"
	MetaConnID        = "conn_id"
	MetaRef           = "ref"
	MetaReceivedAt    = "received_at"
	MetaCorrelationID = "correlation_id"
	MetaSeq           = "seq"
	// MetaEpoch is the room's epoch when the message was stored.
	MetaEpoch = "epoch"
	// MetaReason and MetaModerator are set on dead-lettered messages.
	MetaReason    = "reason"
	MetaModerator = "moderator"
	MetaCode      = "code"
)

// Limits of the wire protocol that are not configurable.
const (
	// MaxRoomLen is the longest room name, in bytes.
	MaxRoomLen = 64
	// MaxRefLen is the longest client reference, in characters.
	MaxRefLen = 64
	// MaxUserLen is the longest user name, in characters.
	MaxUserLen = 32
	// DefaultMaxTextBytes is the default limit of a message's text, in bytes of UTF-8.
	DefaultMaxTextBytes = 4096
)

// Message is a stored chat message as clients see it.
type Message struct {
	ID   string    `json:"id"`
	Room string    `json:"room"`
	Seq  string    `json:"seq"`
	User string    `json:"user"`
	Text string    `json:"text"`
	TS   time.Time `json:"ts"`
	Ref  string    `json:"ref,omitempty"`
	// Epoch is the room's epoch when the message was stored ("" for a
	// message stored before epochs existed).
	Epoch string `json:"epoch,omitempty"`
}

// TimeFormat is the format of message timestamps on the wire: RFC 3339, UTC,
// milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// FromWatermill decodes a stored Watermill message (payload = text, the rest
// in metadata) into a Message. It fails when the room, user or seq is missing.
func FromWatermill(msg *message.Message) (Message, error) {
	m := Message{
		ID:    msg.UUID,
		Room:  msg.Metadata.Get(MetaRoom),
		Seq:   msg.Metadata.Get(MetaSeq),
		User:  msg.Metadata.Get(MetaUser),
		Text:  string(msg.Payload),
		Ref:   msg.Metadata.Get(MetaRef),
		Epoch: msg.Metadata.Get(MetaEpoch),
	}
	if m.Room == "" || m.User == "" || m.Seq == "" {
		return Message{}, fmt.Errorf("message %s: %w", msg.UUID, ErrIncomplete)
	}
	if ts := msg.Metadata.Get(MetaReceivedAt); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Message{}, fmt.Errorf("message %s: received_at: %w", msg.UUID, err)
		}
		m.TS = t.UTC()
	}
	return m, nil
}

// ErrIncomplete reports a stored message that lacks a required field.
var ErrIncomplete = errors.New("incomplete message")

// Error codes of the pipeline's refusals, sent to clients in error frames.
// They are part of protocol v1; the gateway adds codes of its own (ws).
const (
	CodeTooLarge    = "too_large"
	CodeInvalid     = "invalid"
	CodeRateLimited = "rate_limited"
	CodeRejected    = "rejected"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Error is a refusal that reaches the client as an error frame.
type Error struct {
	// Code is one of the Code constants.
	Code string
	// Reason is a human-readable explanation, shown to the user.
	Reason string
	// Moderator names the moderator that rejected the message, if any.
	Moderator string
	// RetryAfter is how long to wait before sending again (rate_limited).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Reason }

// Errorf returns an *Error with the code and a formatted reason.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// ValidateRoom reports whether name is a valid room name: 1–64 characters of
// letters, digits and "_ - . :".
func ValidateRoom(name string) error {
	if name == "" {
		return Errorf(CodeInvalid, "room name is empty")
	}
	if len(name) > MaxRoomLen {
		return Errorf(CodeInvalid, "room name is longer than %d characters", MaxRoomLen)
	}
	for _, r := range name {
		if !(r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.:", r))) {
			return Errorf(CodeInvalid, "room name may contain only letters, digits and _ - . :")
		}
	}
	return nil
}

// ValidateUser reports whether name is a valid user name: the name rules
// the gateway applies to who a client says it is (1–32 characters that
// people can see and tell apart: no control, invisible or bidirectional
// characters, no leading or trailing space, no mix of Latin, Greek and
// Cyrillic letters), in Unicode normal form NFKC. So a message from any
// publisher, not only the gateway, cannot pass for another user's.
func ValidateUser(name string) error {
	if err := names.Check("user name", name, MaxUserLen); err != nil {
		return &Error{Code: CodeInvalid, Reason: strings.TrimPrefix(err.Error(), names.ErrBad.Error()+": ")}
	}
	return nil
}

// ValidateRef reports whether ref is a valid client reference (at most 64
// printable characters; empty is allowed).
func ValidateRef(ref string) error {
	if utf8.RuneCountInString(ref) > MaxRefLen {
		return Errorf(CodeInvalid, "ref is longer than %d characters", MaxRefLen)
	}
	for _, r := range ref {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return Errorf(CodeInvalid, "ref contains a control character")
		}
	}
	return nil
}

// ValidateText reports whether text is acceptable message text: not empty or
// blank, valid UTF-8, and free of control characters other than newline and
// tab. Its length is checked by the size-limit middleware.
func ValidateText(text string) error {
	if strings.TrimSpace(text) == "" {
		return Errorf(CodeInvalid, "text is empty")
	}
	if !utf8.ValidString(text) {
		return Errorf(CodeInvalid, "text is not valid UTF-8")
	}
	for _, r := range text {
		if r == '\n' || r == '\t' {
			continue
		}
		if unicode.IsControl(r) || r == 0x2028 || r == 0x2029 {
			return Errorf(CodeInvalid, "text contains control character U+%04X", r)
		}
	}
	return nil
}

// Seq is a parsed message sequence number: "<ms>-<n>", the Redis stream entry
// ID format, which the memory backend uses too. Clients treat seqs as opaque.
type Seq struct {
	MS, N uint64
}

// ParseSeq parses a seq string.
func ParseSeq(s string) (Seq, error) {
	ms, n, ok := strings.Cut(s, "-")
	if !ok {
		return Seq{}, fmt.Errorf("seq %q: %w", s, ErrBadSeq)
	}
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(n, 10, 64)
	if err1 != nil || err2 != nil {
		return Seq{}, fmt.Errorf("seq %q: %w", s, ErrBadSeq)
	}
	return Seq{a, b}, nil
}

// ErrBadSeq reports a malformed seq.
var ErrBadSeq = errors.New("malformed seq")

// String formats the seq as "<ms>-<n>".
func (s Seq) String() string {
	return strconv.FormatUint(s.MS, 10) + "-" + strconv.FormatUint(s.N, 10)
}

// Less reports whether s sorts before o.
func (s Seq) Less(o Seq) bool {
	return s.MS < o.MS || s.MS == o.MS && s.N < o.N
}

// Next returns the smallest seq after s.
func (s Seq) Next() Seq {
	if s.N == ^uint64(0) {
		return Seq{s.MS + 1, 0}
	}
	return Seq{s.MS, s.N + 1}
}

// CompareSeq compares two seq strings like strings.Compare; malformed seqs
// sort first.
func CompareSeq(a, b string) int {
	x, errA := ParseSeq(a)
	y, errB := ParseSeq(b)
	switch {
	case errA != nil && errB != nil:
		return 0
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	case x.Less(y):
		return -1
	case y.Less(x):
		return 1
	}
	return 0
}
