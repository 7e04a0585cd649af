package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// LagCap is the largest lag Streams counts exactly; a larger lag is
// reported as LagCap with LagCapped set. Redis counts the entries after an
// instance's position with XRANGE, so the cap bounds the work per partition.
const LagCap = 10_000

// countAfter counts, inside Redis, the entries of KEYS[1] after ARGV[1]
// (an exclusive XRANGE start), at most ARGV[2]; only the count travels.
var countAfter = redis.NewScript(`return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])`)

// Limits are the trimming limits a deployment is configured with (MAXLEN ~
// of each kind of stream). Streams reports them; it cannot read them from
// Redis, which does not record a stream's MAXLEN.
type Limits struct {
	// Room is the limit of each room stream.
	Room int64 `json:"room"`
	// Bus is the limit of each partition bus.
	Bus int64 `json:"bus"`
	// Rejected is the limit of the dead-letter stream.
	Rejected int64 `json:"rejected"`
}

// StreamInfo describes one stream.
type StreamInfo struct {
	Key string `json:"key"`
	// Kind is "bus", "room" or "rejected".
	Kind string `json:"kind"`
	// Partition is the stream's partition (-1 for the dead-letter stream).
	Partition int `json:"partition"`
	// Room is the room of a room stream.
	Room string `json:"room,omitempty"`
	// Exists is false for a stream never written.
	Exists bool `json:"exists"`
	// Length is the number of entries kept; EntriesAdded counts every
	// entry ever added (the difference was trimmed).
	Length       int64 `json:"length"`
	EntriesAdded int64 `json:"entries_added"`
	// FirstID and LastID are the oldest and newest entries kept, with
	// their times (RFC 3339 UTC, milliseconds).
	FirstID string `json:"first_id,omitempty"`
	FirstTS string `json:"first_ts,omitempty"`
	LastID  string `json:"last_id,omitempty"`
	LastTS  string `json:"last_ts,omitempty"`
	// LastGeneratedID is the last ID ever added (kept even when trimmed).
	LastGeneratedID string `json:"last_generated_id,omitempty"`
	// MemoryBytes is Redis's MEMORY USAGE of the key (SAMPLES 0: exact).
	MemoryBytes int64 `json:"memory_bytes"`
	// MaxLen is the configured trimming limit of this kind of stream.
	MaxLen int64 `json:"maxlen"`
}

// Position is how far one instance has delivered one partition's bus.
type Position struct {
	// Partition and Bus name the partition bus.
	Partition int    `json:"partition"`
	Bus       string `json:"bus"`
	// ID is the last bus entry the instance delivered ("" none yet).
	ID string `json:"id,omitempty"`
	// TS is the time of ID.
	TS string `json:"ts,omitempty"`
	// Lag is the number of bus entries after ID (after the instance's start
	// when ID is empty): entries stored but not yet delivered by the
	// instance, as of its last report.
	Lag int64 `json:"lag"`
	// LagCapped reports that the lag is at least LagCap.
	LagCapped bool `json:"lag_capped,omitempty"`
}

// Instance describes one running instance.
type Instance struct {
	// ID and Addr are the instance's name and listen address.
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Version is the build the instance runs.
	Version string `json:"version,omitempty"`
	// StartedAt is when the instance started, RFC 3339.
	StartedAt string `json:"started_at,omitempty"`
	// Positions has one entry per partition.
	Positions []Position `json:"positions"`
}

// Report is the state of every stream of a deployment.
type Report struct {
	// Prefix and Partitions identify the deployment.
	Prefix     string `json:"prefix"`
	Partitions int    `json:"partitions"`
	// Limits are the configured trimming limits.
	Limits Limits `json:"limits"`
	// Buses has one entry per partition, in partition order.
	Buses []StreamInfo `json:"buses"`
	// Rooms has one entry per room stream, sorted by room.
	Rooms []StreamInfo `json:"rooms"`
	// Rejected is the dead-letter stream.
	Rejected StreamInfo `json:"rejected"`
	// Instances are the running instances.
	Instances []Instance `json:"instances"`
}

// Streams reports every partition bus, every room stream and the
// dead-letter stream, with each running instance's position and lag per
// partition.
func (r *Reader) Streams(ctx context.Context, limits Limits) (Report, error) {
	rep := Report{Prefix: r.keys.Prefix, Partitions: r.keys.Partitions, Limits: limits}
	rooms, err := r.b.Rooms(ctx)
	if err != nil {
		return rep, fmt.Errorf("replay: rooms: %w", err)
	}
	var all []StreamInfo
	for p := range r.keys.Partitions {
		all = append(all, StreamInfo{Key: r.keys.Bus(p), Kind: "bus", Partition: p, MaxLen: limits.Bus})
	}
	for _, room := range rooms {
		all = append(all, StreamInfo{
			Key: r.keys.Room(room), Kind: "room", Room: room, MaxLen: limits.Room,
			Partition: pipeline.PartitionOf(room, r.keys.Partitions),
		})
	}
	all = append(all, StreamInfo{Key: r.keys.Rejected(), Kind: "rejected", Partition: -1, MaxLen: limits.Rejected})
	if err := r.describe(ctx, all); err != nil {
		return rep, err
	}
	n := r.keys.Partitions
	rep.Buses, rep.Rooms, rep.Rejected = all[:n], all[n:len(all)-1], all[len(all)-1]
	if rep.Instances, err = r.instances(ctx, rep.Buses); err != nil {
		return rep, err
	}
	return rep, nil
}

// describe fills in the figures of every stream, in pipelined batches.
func (r *Reader) describe(ctx context.Context, ss []StreamInfo) error {
	const batch = 256
	for start := 0; start < len(ss); start += batch {
		chunk := ss[start:min(start+batch, len(ss))]
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		pipe := r.c.Pipeline()
		infos := make([]*redis.XInfoStreamCmd, len(chunk))
		mems := make([]*redis.IntCmd, len(chunk))
		for i, s := range chunk {
			infos[i] = pipe.XInfoStream(rctx, s.Key)
			mems[i] = pipe.MemoryUsage(rctx, s.Key, 0) // every node: exact, and cheap for streams
		}
		_, _ = pipe.Exec(rctx) // every command's error is checked below
		cancel()
		for i := range chunk {
			s := &chunk[i]
			info, err := infos[i].Result()
			if isNoSuchKey(err) {
				continue
			}
			if err != nil {
				return wrap("xinfo "+s.Key, err)
			}
			s.Exists = true
			s.Length, s.EntriesAdded, s.LastGeneratedID = info.Length, info.EntriesAdded, info.LastGeneratedID
			s.FirstID, s.FirstTS = info.FirstEntry.ID, formatIDTime(info.FirstEntry.ID)
			s.LastID, s.LastTS = info.LastEntry.ID, formatIDTime(info.LastEntry.ID)
			mem, err := mems[i].Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return wrap("memory usage "+s.Key, err)
			}
			s.MemoryBytes = mem
		}
	}
	return nil
}

// instances lists the running instances with their lag per partition.
func (r *Reader) instances(ctx context.Context, buses []StreamInfo) ([]Instance, error) {
	infos, err := r.b.Instances(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay: instances: %w", err)
	}
	out := make([]Instance, 0, len(infos))
	type count struct {
		pos *Position
		cmd *redis.Cmd
	}
	var counts []count
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	pipe := r.c.Pipeline()
	for _, info := range infos {
		in := Instance{ID: info.ID, Addr: info.Addr, Version: info.Version, Positions: make([]Position, len(buses))}
		if !info.StartedAt.IsZero() {
			in.StartedAt = info.StartedAt.UTC().Format(time.RFC3339)
		}
		out = append(out, in)
	}
	for i, info := range infos {
		for p, bus := range buses {
			pos := &out[i].Positions[p]
			*pos = Position{Partition: p, Bus: bus.Key}
			if p < len(info.Positions) {
				pos.ID, pos.TS = info.Positions[p], formatIDTime(info.Positions[p])
			}
			from := pos.ID
			if from == "" && !info.StartedAt.IsZero() {
				from = pipeline.Seq{MS: uint64(max(info.StartedAt.UnixMilli(), 0))}.String()
			} else if from == "" {
				from = "0-0"
			}
			if !bus.Exists || pipeline.CompareSeq(from, bus.LastGeneratedID) >= 0 {
				continue // nothing after it
			}
			counts = append(counts, count{pos, countAfter.Eval(ctx, pipe, []string{bus.Key}, "("+from, LagCap+1)})
		}
	}
	if len(counts) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("count lag", err)
	}
	for _, c := range counts {
		n, err := c.cmd.Int64()
		if err != nil {
			return nil, wrap("count lag", err)
		}
		c.pos.Lag, c.pos.LagCapped = min(n, LagCap), n > LagCap
	}
	return out, nil
}

// formatIDTime formats the time of a stream ID, "" for none.
func formatIDTime(id string) string {
	if id == "" {
		return ""
	}
	t, err := IDTime(id)
	if err != nil {
		return ""
	}
	return t.Format(pipeline.TimeFormat)
}
