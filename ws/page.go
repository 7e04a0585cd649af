package ws

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/chatstream/chatstream/pipeline"
)

// pageReadChunk is the most messages one backend read of a page asks for. A
// page of large messages fills its byte budget long before MaxPageMessages,
// and reading in chunks keeps the messages read but not sent few.
const pageReadChunk = 128

// newestSeq is the before of a range that ends at the newest message.
var newestSeq = pipeline.Seq{MS: ^uint64(0), N: ^uint64(0)}.String()

// pageRange is the messages a reply is asked for: the range is the newest
// want messages with after < seq < before, and the reply holds at most
// limit of them (a join's history asks for want = limit = n; a history
// frame for limit messages of a range without end).
type pageRange struct {
	// before is a seq, or "" for no upper bound.
	before string
	// after is nil for no lower bound.
	after *pipeline.Seq
	want  int
	limit int
}

// page is the part of a range that one reply carries.
type page struct {
	// msgs are message frames, each encoded once, oldest first; never nil,
	// so that an empty page encodes as [].
	msgs []json.RawMessage
	// newest is the seq of the newest message in msgs ("" if none).
	newest string
	// more reports that the range holds messages older than msgs, left out
	// to keep the page within Config.MaxPageMessages and MaxPageBytes.
	more bool
	// reachedAfter reports that the read met a message at or before the
	// range's after: every message of the range after it was seen.
	reachedAfter bool
	// epoch is the room's epoch as the backend reported it with the
	// page's first read ("" when the room holds nothing, or nothing was
	// read).
	epoch string
	// roomNewest is the seq of the room's newest message, when the read
	// started at the newest (before ""); "" for an empty room.
	roomNewest string
	// read reports that at least one backend read was made.
	read bool
}

// readPage reads the newest messages of r that fit the page budgets: at
// most MaxPageMessages, and at most MaxPageBytes of encoded messages (but
// at least one message, however large). It reads backwards from before in
// chunks, so a live message stored meanwhile is never in the page and never
// missing from the live messages after it.
func (c *Conn) readPage(ctx context.Context, room string, r pageRange) (page, error) {
	cfg := &c.gw.cfg
	limit := min(r.want, r.limit, cfg.MaxPageMessages)
	var p page
	var kept []json.RawMessage // newest first
	size := 0
	cursor := r.before
	if cursor == "" {
		cursor = newestSeq
	}
	// add keeps m if the budgets allow and reports whether to go on.
	add := func(m pipeline.Message) bool {
		if len(kept) == r.want {
			return false // the range ends here
		}
		if len(kept) == limit {
			p.more = true
			return false
		}
		enc := encode(toWire(m))
		if len(kept) > 0 && size+len(enc)+1 > cfg.MaxPageBytes {
			p.more = true
			return false
		}
		if len(kept) == 0 {
			p.newest = m.Seq
		}
		kept = append(kept, enc)
		size += len(enc) + 1 // and a comma
		return true
	}
	for r.want > 0 {
		// Ask for what the range may still hold, and one message more
		// than the page may hold to learn whether the range goes on.
		n := r.want - len(kept)
		if space := limit - len(kept); n > space {
			n = space + 1
		}
		n = min(n, pageReadChunk)
		res, err := c.gw.hist.History(ctx, room, pipeline.HistoryQuery{Before: cursor, Limit: n})
		if err != nil {
			return p, err
		}
		if !p.read {
			p.read, p.epoch = true, res.Epoch
			if r.before == "" && len(res.Messages) > 0 {
				p.roomNewest = res.Messages[len(res.Messages)-1].Seq
			}
		}
		msgs := res.Messages
		// A short read is the start of the kept history. (A backend
		// that skips an undecodable entry may end a page early, which
		// only hides older messages from this reply.)
		atStart := len(msgs) < n
		if r.after != nil {
			i := 0
			for i < len(msgs) && !afterSeq(msgs[i].Seq, *r.after) {
				i++
			}
			if i > 0 {
				msgs = msgs[i:]
				p.reachedAfter = true
			}
		}
		for j := len(msgs) - 1; j >= 0; j-- {
			if !add(msgs[j]) {
				return p.done(kept), nil
			}
		}
		if atStart || p.reachedAfter || len(kept) == r.want {
			break
		}
		cursor = res.Messages[0].Seq
	}
	return p.done(kept), nil
}

// done puts the messages kept newest first into p, oldest first.
func (p page) done(newestFirst []json.RawMessage) page {
	p.msgs = make([]json.RawMessage, len(newestFirst))
	copy(p.msgs, newestFirst)
	slices.Reverse(p.msgs)
	return p
}

// afterSeq reports whether seq s is after a; a seq that does not parse is
// not.
func afterSeq(s string, a pipeline.Seq) bool {
	seq, err := pipeline.ParseSeq(s)
	return err == nil && a.Less(seq)
}
