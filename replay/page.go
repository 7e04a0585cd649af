package replay

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// Page is one page of a paginated read, oldest first.
type Page struct {
	// Entries are the page's entries (undecodable entries are skipped).
	Entries []Entry
	// Next is the ID of the first entry after the page, to pass as the
	// since of the next page; "" when the page is the last.
	Next string
}

// RoomMessages returns up to limit messages of room within rng. It fails
// with ErrUnknownRoom for a room without a stream.
func (r *Reader) RoomMessages(ctx context.Context, room string, rng Range, limit int) (Page, error) {
	if err := r.CheckRoom(ctx, room); err != nil {
		return Page{}, err
	}
	return r.page(ctx, r.keys.Room(room), rng, limit)
}

// RejectedPage returns up to limit dead letters within rng.
func (r *Reader) RejectedPage(ctx context.Context, rng Range, limit int) (Page, error) {
	return r.page(ctx, r.keys.Rejected(), rng, limit)
}

// page reads limit+1 entries: the last one only tells where the next page
// starts.
func (r *Reader) page(ctx context.Context, key string, rng Range, limit int) (Page, error) {
	if limit < 1 {
		limit = 1
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	xs, err := r.c.XRangeN(ctx, key, rng.start(), rng.end(), int64(limit)+1).Result()
	if err != nil {
		return Page{}, wrap("xrange", err)
	}
	var p Page
	if len(xs) > limit {
		p.Next = xs[limit].ID
		xs = xs[:limit]
	}
	p.Entries = make([]Entry, 0, len(xs))
	for _, x := range xs {
		e, err := Decode(x)
		if err != nil {
			r.log.Warn("skipping undecodable entry", "stream", key, "err", err)
			continue
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

// RoomInfo describes a room's history stream.
type RoomInfo struct {
	// Room is the room's name.
	Room string `json:"room"`
	// Length is the number of messages kept.
	Length int64 `json:"length"`
	// FirstSeq and LastSeq are the oldest and newest messages kept.
	FirstSeq string `json:"first_seq,omitempty"`
	LastSeq  string `json:"last_seq,omitempty"`
	// LastTS is the newest message's time, RFC 3339 UTC with milliseconds.
	LastTS string `json:"last_ts,omitempty"`
}

// RoomList returns up to limit rooms, sorted by name, whose name sorts
// after after, and the name to pass as after for the next page ("" when
// this page is the last).
func (r *Reader) RoomList(ctx context.Context, after string, limit int) ([]RoomInfo, string, error) {
	if limit < 1 {
		limit = 1
	}
	rooms, err := r.b.Rooms(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("replay: rooms: %w", err)
	}
	rooms = rooms[sort.SearchStrings(rooms, after):]
	if len(rooms) > 0 && rooms[0] == after {
		rooms = rooms[1:]
	}
	next := ""
	if len(rooms) > limit {
		rooms = rooms[:limit]
		next = rooms[limit-1]
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	pipe := r.c.Pipeline()
	cmds := make([]*redis.XInfoStreamCmd, len(rooms))
	for i, room := range rooms {
		cmds[i] = pipe.XInfoStream(ctx, r.keys.Room(room))
	}
	_, _ = pipe.Exec(ctx) // every command's error is checked below
	out := make([]RoomInfo, 0, len(rooms))
	for i, room := range rooms {
		info, err := cmds[i].Result()
		if isNoSuchKey(err) {
			continue // deleted since the SCAN
		}
		if err != nil {
			return nil, "", wrap("xinfo", err)
		}
		ri := RoomInfo{Room: room, Length: info.Length, FirstSeq: info.FirstEntry.ID, LastSeq: info.LastEntry.ID}
		if e, err := Decode(info.LastEntry); err == nil {
			ri.LastTS = e.TS.UTC().Format(pipeline.TimeFormat)
		}
		out = append(out, ri)
	}
	return slices.Clip(out), next, nil
}
