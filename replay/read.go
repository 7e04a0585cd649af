package replay

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// Query selects messages for Reader.Messages.
type Query struct {
	// Room is the room read. Exactly one of Room, Rooms and AllRooms is set.
	Room string
	// Rooms reads several rooms, merged in seq order.
	Rooms []string
	// AllRooms reads every room, merged in seq order.
	AllRooms bool
	// Range selects by seq. With Follow, Until must be empty.
	Range Range
	// Filter selects by user and text.
	Filter Filter
	// Follow keeps reading new messages after the stored ones, until the
	// context is done.
	Follow bool
	// Progress, when set, is called after every page read with the number
	// of entries read so far (selected or not). It is not called while
	// following.
	Progress func(scanned int64)
	// Skipped, when set, is called for every stored entry that cannot be
	// decoded (it is skipped either way).
	Skipped func(stream string, err error)
}

// rooms returns the rooms q names (not for AllRooms).
func (q Query) rooms() []string {
	if len(q.Rooms) > 0 {
		return slices.Compact(slices.Sorted(slices.Values(q.Rooms)))
	}
	return []string{q.Room}
}

func (q Query) validate() error {
	modes := 0
	for _, set := range []bool{q.Room != "", len(q.Rooms) > 0, q.AllRooms} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return errors.New("replay: query needs one room, several rooms or all rooms")
	}
	if q.Follow && q.Range.Until != "" {
		return fmt.Errorf("%w: until cannot be combined with follow", ErrBadRange)
	}
	return nil
}

// Messages calls emit for every message selected by q, oldest first: the
// messages stored when Messages is called, read with paginated XRANGE (and,
// for AllRooms, merged across rooms by seq); then, with q.Follow, every new
// message as it is stored, until ctx is done. An error from emit stops the
// read and is returned. A follow ended by ctx returns nil; a read without
// follow returns ctx's error. An unknown room fails with ErrUnknownRoom.
//
// The end of the stored part is fixed when Messages starts, so a busy room
// does not keep the read going, and a follow continues exactly after it:
// no message is printed twice or skipped.
func (r *Reader) Messages(ctx context.Context, q Query, emit func(Entry) error) error {
	if err := q.validate(); err != nil {
		return err
	}
	// followed are the streams whose new entries a follow reads: the room
	// stream itself, or every partition bus for all rooms. Their last IDs,
	// taken before the rooms are listed, end the stored part.
	var followed []string
	if q.AllRooms {
		for p := range r.keys.Partitions {
			followed = append(followed, r.keys.Bus(p))
		}
	} else {
		for _, room := range q.rooms() {
			if err := r.CheckRoom(ctx, room); err != nil {
				return err
			}
			followed = append(followed, r.keys.Room(room))
		}
	}
	last, err := r.lastIDs(ctx, followed)
	if err != nil {
		return err
	}
	rooms := q.rooms()
	if q.AllRooms {
		if rooms, err = r.b.Rooms(ctx); err != nil {
			return fmt.Errorf("replay: rooms: %w", err)
		}
	}
	cursors := make([]*cursor, 0, len(rooms))
	for _, room := range rooms {
		snap := last[r.keys.Room(room)]
		if q.AllRooms {
			snap = last[r.keys.BusOf(room)]
		}
		cursors = append(cursors, &cursor{key: r.keys.Room(room), next: q.Range.start(), end: capEnd(q.Range.end(), snap)})
	}
	match := func(e Entry) error {
		if !q.Filter.Match(e) {
			return nil
		}
		return emit(e)
	}
	if err := r.merge(ctx, cursors, q.Progress, q.Skipped, match); err != nil {
		return err
	}
	if !q.Follow {
		return nil
	}
	err = r.follow(ctx, followed, last, func(e Entry) error {
		if !q.Range.Contains(e.ID) {
			return nil
		}
		return match(e)
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// Count returns the number of entries stored in the streams q reads (before
// Range and Filter), for a progress bar.
func (r *Reader) Count(ctx context.Context, q Query) (int64, error) {
	rooms := q.rooms()
	if q.AllRooms {
		var err error
		if rooms, err = r.b.Rooms(ctx); err != nil {
			return 0, fmt.Errorf("replay: rooms: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	pipe := r.c.Pipeline()
	cmds := make([]*redis.IntCmd, len(rooms))
	for i, room := range rooms {
		cmds[i] = pipe.XLen(ctx, r.keys.Room(room))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, wrap("xlen", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// lastIDs returns the last ID ever generated in each stream ("0-0" for a
// stream that does not exist).
func (r *Reader) lastIDs(ctx context.Context, keys []string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	pipe := r.c.Pipeline()
	cmds := make([]*redis.XInfoStreamCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XInfoStream(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // every command's error is checked below
	out := make(map[string]string, len(keys))
	for i, c := range cmds {
		info, err := c.Result()
		switch {
		case isNoSuchKey(err):
			out[keys[i]] = "0-0"
		case err != nil:
			return nil, wrap("xinfo "+keys[i], err)
		default:
			out[keys[i]] = info.LastGeneratedID
		}
	}
	return out, nil
}

// cursor pages through one stream with XRANGE.
type cursor struct {
	key string
	// next is the XRANGE start of the next page; end is the last ID read.
	next, end string
	// buf holds the page being consumed; head is the parsed ID of buf[0].
	buf  []redis.XMessage
	head pipeline.Seq
	// done is set when the last page has been read.
	done bool
}

// advance drops the consumed head of c.buf.
func (c *cursor) advance() {
	c.buf = c.buf[1:]
	c.parseHead()
}

func (c *cursor) parseHead() {
	if len(c.buf) > 0 {
		c.head, _ = pipeline.ParseSeq(c.buf[0].ID) // Redis only hands out well-formed IDs
	}
}

// fill reads the next page of every cursor whose page is used up, in one
// pipelined round trip.
func (r *Reader) fill(ctx context.Context, cs []*cursor) error {
	var need []*cursor
	for _, c := range cs {
		if len(c.buf) == 0 && !c.done {
			need = append(need, c)
		}
	}
	for chunk := range slices.Chunk(need, 256) {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		pipe := r.c.Pipeline()
		cmds := make([]*redis.XMessageSliceCmd, len(chunk))
		for i, c := range chunk {
			cmds[i] = pipe.XRangeN(rctx, c.key, c.next, c.end, int64(r.cfg.PageSize))
		}
		_, err := pipe.Exec(rctx)
		cancel()
		if err != nil {
			return wrap("xrange", err)
		}
		for i, c := range chunk {
			c.buf = cmds[i].Val()
			c.done = len(c.buf) < r.cfg.PageSize
			if n := len(c.buf); n > 0 {
				c.next = "(" + c.buf[n-1].ID
				c.parseHead()
			}
		}
	}
	return nil
}

// merge calls fn for every entry of the cursors' streams in seq order (a
// k-way merge over a heap of cursors), skipping entries it cannot decode.
func (r *Reader) merge(ctx context.Context, cs []*cursor, progress func(int64), skipped func(string, error), fn func(Entry) error) error {
	if err := r.fill(ctx, cs); err != nil {
		return err
	}
	h := make(cursorHeap, 0, len(cs))
	for _, c := range cs {
		if len(c.buf) > 0 {
			h = append(h, c)
		}
	}
	heap.Init(&h)
	var scanned int64
	for h.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := h[0]
		x := c.buf[0]
		c.advance()
		scanned++
		if e, err := Decode(x); err != nil {
			r.log.Warn("skipping undecodable entry", "stream", c.key, "err", err)
			if skipped != nil {
				skipped(c.key, err)
			}
		} else if err := fn(e); err != nil {
			return err
		}
		if len(c.buf) == 0 {
			if progress != nil {
				progress(scanned)
			}
			if err := r.fill(ctx, []*cursor{c}); err != nil {
				return err
			}
		}
		if len(c.buf) == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	if progress != nil {
		progress(scanned)
	}
	return nil
}

// cursorHeap orders cursors by the seq of their next entry. Rooms of
// different partitions can share a seq (one millisecond, counter 0 on two
// buses); the stream key breaks the tie, so a merge is repeatable.
type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	return a.head.Less(b.head) || a.head == b.head && a.key < b.key
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
