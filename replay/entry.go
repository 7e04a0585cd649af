package replay

import (
	"maps"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// Metadata keys the tools add to the messages they submit.
const (
	// MetaReplayedFrom is set on a replayed message: "<room>/<seq>" of the
	// original.
	MetaReplayedFrom = "replayed_from"
	// MetaRequeuedFrom is set on a requeued message: the ID of the dead
	// letter it came from.
	MetaRequeuedFrom = "requeued_from"
)

// Entry is one decoded stream entry: a message of a room stream or a bus,
// or a dead letter.
type Entry struct {
	// ID is the stream entry ID: the message's seq in a room stream or a bus,
	// the dead letter's own ID in the dead-letter stream.
	ID string
	// MsgID is the message's UUID (Watermill's _watermill_message_uuid).
	MsgID string
	// Room, User, Text and Ref are the message's fields.
	Room, User, Text, Ref string
	// TS is when an instance received the message (received_at), or the
	// entry ID's time when received_at is missing or malformed.
	TS time.Time
	// Meta holds every metadata key of the entry, including the ones above.
	Meta map[string]string
}

// Decode decodes a stream entry in chatstream's layout (docs/STREAMS.md).
// It fails with redisstore.ErrUndecodable for an entry in another layout.
func Decode(x redis.XMessage) (Entry, error) {
	msg, err := redisstore.DecodeEntry(x)
	if err != nil {
		return Entry{}, err
	}
	meta := maps.Clone(map[string]string(msg.Metadata))
	e := Entry{
		ID: x.ID, MsgID: msg.UUID, Text: string(msg.Payload),
		Room: meta[pipeline.MetaRoom], User: meta[pipeline.MetaUser], Ref: meta[pipeline.MetaRef],
		Meta: meta,
	}
	e.TS, _ = IDTime(x.ID) // Redis only hands out well-formed IDs
	if ts := meta[pipeline.MetaReceivedAt]; ts != "" {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			e.TS = t.UTC()
		}
	}
	return e, nil
}

// Reason returns the reason a dead letter was refused with.
func (e Entry) Reason() string { return e.Meta[pipeline.MetaReason] }

// Code returns a dead letter's error code (pipeline.CodeRejected, ...).
func (e Entry) Code() string { return e.Meta[pipeline.MetaCode] }

// Moderator returns the name of the moderator that rejected a dead letter.
func (e Entry) Moderator() string { return e.Meta[pipeline.MetaModerator] }

// MessageRecord is the JSON form of a stored message: one line of
// `chatstream replay --format jsonl`, one element of the admin API's
// messages.
type MessageRecord struct {
	// ID is the message's UUID.
	ID string `json:"id"`
	// Seq is the message's seq: its entry ID in the room stream and the bus.
	Seq string `json:"seq"`
	// Room, User and Text are the message's fields.
	Room string `json:"room"`
	User string `json:"user"`
	Text string `json:"text"`
	// TS is received_at (or the seq's time), RFC 3339 UTC with milliseconds.
	TS string `json:"ts"`
	// Ref is the sender's client reference, if any.
	Ref string `json:"ref,omitempty"`
	// Meta holds the other metadata (conn_id, received_at, correlation_id,
	// replayed_from, ...).
	Meta map[string]string `json:"meta,omitempty"`
}

// Record returns the message's JSON form.
func (e Entry) Record() MessageRecord {
	return MessageRecord{
		ID: e.MsgID, Seq: e.ID, Room: e.Room, User: e.User, Text: e.Text,
		TS: e.TS.UTC().Format(pipeline.TimeFormat), Ref: e.Ref,
		Meta: without(e.Meta, pipeline.MetaSeq, pipeline.MetaRoom, pipeline.MetaUser, pipeline.MetaRef),
	}
}

// RejectedRecord is the JSON form of a dead letter: one line of
// `chatstream rejected --format jsonl`, one element of the admin API's
// rejected list.
type RejectedRecord struct {
	// ID is the dead letter's entry ID, which --requeue takes.
	ID string `json:"id"`
	// MsgID is the refused message's UUID.
	MsgID string `json:"msg_id"`
	// TS is when the message was dead-lettered (the entry ID's time).
	TS string `json:"ts"`
	// ReceivedAt is when an instance received the message.
	ReceivedAt string `json:"received_at,omitempty"`
	// Room and User are the refused message's room and sender.
	Room string `json:"room"`
	User string `json:"user"`
	// Moderator, Code and Reason are the refusal.
	Moderator string `json:"moderator,omitempty"`
	Code      string `json:"code"`
	Reason    string `json:"reason"`
	// Text is the refused message's text.
	Text string `json:"text"`
	// Meta holds the other metadata (conn_id, ref, correlation_id,
	// requeued_from, ...).
	Meta map[string]string `json:"meta,omitempty"`
}

// Rejected returns the dead letter's JSON form.
func (e Entry) Rejected() RejectedRecord {
	ts, _ := IDTime(e.ID) // Redis only hands out well-formed IDs
	rec := RejectedRecord{
		ID: e.ID, MsgID: e.MsgID, TS: ts.Format(pipeline.TimeFormat),
		Room: e.Room, User: e.User, Moderator: e.Moderator(), Code: e.Code(), Reason: e.Reason(), Text: e.Text,
		Meta: without(e.Meta, pipeline.MetaSeq, pipeline.MetaRoom, pipeline.MetaUser, pipeline.MetaReceivedAt,
			pipeline.MetaModerator, pipeline.MetaCode, pipeline.MetaReason),
	}
	if _, ok := e.Meta[pipeline.MetaReceivedAt]; ok {
		rec.ReceivedAt = e.TS.UTC().Format(pipeline.TimeFormat)
	}
	return rec
}

// without returns a copy of m without keys, nil when nothing is left.
func without(m map[string]string, keys ...string) map[string]string {
	out := maps.Clone(m)
	for _, k := range keys {
		delete(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
