package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// Protocols a run can speak (Config.Protocol).
const (
	// ProtocolChatstream is chatstream's protocol v1 (docs/PROTOCOL.md):
	// /ws, join, send, ack and message frames.
	ProtocolChatstream = "chatstream"
	// ProtocolCentrifugo is Centrifugo's JSON client protocol (v2, as
	// Centrifugo v5 and v6 speak it), so that the same scenarios measure
	// Centrifugo side by side with chatstream: a connection dials
	// /connection/websocket and connects anonymously, a join is a
	// subscribe, a send is a publish whose reply is the ack, and a
	// delivery is a publication push. The server must let anonymous
	// clients connect, subscribe and publish (docs/PERFORMANCE.md has a
	// configuration).
	ProtocolCentrifugo = "centrifugo"
)

// centrifugoPath is where Centrifugo serves its WebSocket transport.
const centrifugoPath = "/connection/websocket"

// centrifugoReply is the part of a Centrifugo reply the connect phase and
// the senders read: the command's id and its error, if any.
type centrifugoReply struct {
	ID    uint32 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// centrifugoPing is the server's application-level ping, and the client's
// answer to it.
var centrifugoPing = []byte("{}")

// dialCentrifugo opens a Centrifugo connection, connects it and subscribes
// it to rooms one at a time, waiting for each reply. Command ids 1 (the
// connect) to len(rooms)+1 are used; the sender's publishes follow.
func (r *run) dialCentrifugo(ctx context.Context, url, user string, rooms []int) (*websocket.Conn, error) {
	ws, err := r.open(ctx, url, centrifugoPath)
	if err != nil {
		return nil, err
	}
	command := func(id uint32, what, frame string) error {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			return fmt.Errorf("loadgen: %s as %s: %w", what, user, err)
		}
		if err := awaitCentrifugoReply(ws, id); err != nil {
			return fmt.Errorf("loadgen: %s as %s: %w", what, user, err)
		}
		return nil
	}
	err = command(1, "connect", `{"id":1,"connect":{"name":"`+user+`"}}`)
	for i, room := range rooms {
		if err != nil {
			break
		}
		id := uint32(i + 2)
		name := r.roomName(room)
		err = command(id, "subscribe to "+name, `{"id":`+strconv.FormatUint(uint64(id), 10)+`,"subscribe":{"channel":"`+name+`"}}`)
	}
	if err != nil {
		_ = ws.Close() // the connection is useless
		return nil, err
	}
	return ws, nil
}

// awaitCentrifugoReply reads frames until the reply to command id, and
// returns its error. Pings are answered, those in the reply's message too
// (the server batches several lines in one message).
func awaitCentrifugoReply(ws *websocket.Conn, id uint32) error {
	var answer error
	found := false
	replied := func(data []byte) bool {
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			if bytes.Equal(line, centrifugoPing) {
				answerPing(ws)
				continue
			}
			var f centrifugoReply
			if found || json.Unmarshal(line, &f) != nil || f.ID != id {
				continue
			}
			found = true
			if f.Error != nil {
				answer = fmt.Errorf("server answered %d: %s", f.Error.Code, f.Error.Message)
			}
		}
		return !found
	}
	if err := readUntil(ws, replied); err != nil {
		return err
	}
	return answer
}

// pendingSend is a publish waiting for its reply: what the ack of a
// chatstream send carries in its ref.
type pendingSend struct {
	phase byte
	slot  int
	n     int
	at    time.Duration
}

// appendPublish appends the publish command of a send, numbered with the
// sender's next command id, and remembers the send under that id. The
// publication's data is the chatstream send's text and ref, so that both
// servers carry the same bytes.
func (r *run) appendPublish(buf []byte, s *sender, room, slot, n int, phase byte, at time.Duration) []byte {
	s.nextID++
	id := s.nextID
	s.pendingMu.Lock()
	s.pending[id] = pendingSend{phase: phase, slot: slot, n: n, at: at}
	s.pendingMu.Unlock()
	buf = append(buf, `{"id":`...)
	buf = strconv.AppendUint(buf, uint64(id), 10)
	buf = append(buf, `,"publish":{"channel":"`...)
	buf = append(buf, r.id...)
	buf = append(buf, '-')
	buf = strconv.AppendInt(buf, int64(room), 10)
	buf = append(buf, `","data":{"text":"`...)
	buf = appendText(buf, r.cfg.TextSize, s.index, n, phase, at)
	buf = append(buf, `","ref":"`...)
	buf = appendRef(buf, phase, slot, n, at)
	return append(buf, `"}}}`...)
}

// centrifugoPushPrefix starts a push frame.
var centrifugoPushPrefix = []byte(`{"push":`)

// onCentrifugoReceiverLine handles one line on a Centrifugo receiver: a
// publication push is a delivery, a ping is answered, and anything else
// (replies, join and leave pushes) is skipped.
func (r *run) onCentrifugoReceiverLine(rc *receiver, line []byte, now time.Time) {
	switch {
	case bytes.HasPrefix(line, centrifugoPushPrefix):
		text, ok := stringField(line, textKey)
		if !ok {
			return // a push without a publication's text: join, leave
		}
		r.delivery(rc, text, now)
	case bytes.Equal(line, centrifugoPing):
		answerPing(rc.ws) // the receiver's only writer
	}
}

// onCentrifugoSenderLine handles one line on a Centrifugo sender: the reply
// to a publish is its ack, or its refusal with Centrifugo's error code; a
// ping is answered; pushes are skipped.
func (r *run) onCentrifugoSenderLine(s *sender, line []byte, now time.Time) {
	if bytes.HasPrefix(line, centrifugoPushPrefix) {
		return
	}
	if bytes.Equal(line, centrifugoPing) {
		s.writeMu.Lock()
		answerPing(s.ws)
		s.writeMu.Unlock()
		return
	}
	// A publish's reply, {"id":N,"publish":{}}, is read without a JSON
	// decode, as chatstream's acks are.
	var f centrifugoReply
	if id, rest, ok := cutNumber(bytes.TrimPrefix(line, centrifugoIDPrefix), ','); ok && bytes.HasPrefix(line, centrifugoIDPrefix) &&
		bytes.HasPrefix(rest, centrifugoPublishKey) && id <= math.MaxUint32 {
		f.ID = uint32(id)
	} else if json.Unmarshal(line, &f) != nil {
		return
	}
	if f.ID == 0 {
		return
	}
	s.pendingMu.Lock()
	p, ok := s.pending[f.ID]
	delete(s.pending, f.ID)
	s.pendingMu.Unlock()
	switch {
	case !ok:
		return // a reply to no publish of this run
	case f.Error == nil:
		r.acked(s, p.phase, p.slot, p.n, p.at, now)
	case p.phase == phaseMeasured:
		r.answered.Add(1)
		s.refused[strconv.Itoa(f.Error.Code)]++
	}
}

var (
	centrifugoIDPrefix   = []byte(`{"id":`)
	centrifugoPublishKey = []byte(`"publish":`)
)

// answerPing answers a Centrifugo ping on ws, whose writes the caller
// owns. A failed answer is not reported: the server then closes the
// connection, which the reader reports.
func answerPing(ws *websocket.Conn) {
	_ = ws.SetWriteDeadline(time.Now().Add(WriteWait))         // an error shows on the write
	_ = ws.WriteMessage(websocket.TextMessage, centrifugoPing) // see above
}
