package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// rejectedCmd lists dead letters and sends them through the pipeline again.
type rejectedCmd struct {
	Conn   redisFlags  `embed:""`
	Limits appendFlags `embed:""`

	Since        string   `placeholder:"T" help:"First dead letter: RFC 3339 time, duration ago (15m or -15m) or entry ID (inclusive)."`
	Until        string   `placeholder:"T" help:"Last dead letter: RFC 3339 time, duration ago or entry ID (inclusive)."`
	Moderator    string   `help:"Only dead letters rejected by this moderator."`
	Format       string   `enum:"text,jsonl" default:"text" help:"Output: text or jsonl."`
	Requeue      []string `placeholder:"ID" xor:"requeue" help:"Send these dead letters (entry IDs, as listed) through the pipeline again."`
	RequeueAll   bool     `xor:"requeue" help:"Send every listed dead letter (after --since/--until/--moderator) through the pipeline again."`
	Moderation   string   `env:"CHATSTREAM_MODERATION" placeholder:"FILE" help:"Moderation configuration the requeued messages pass, as on the instances. A requeue needs it, or --no-moderation."`
	NoModeration bool     `help:"Requeue without moderation: the messages are stored as they are, even those moderation refused. Overrides CHATSTREAM_MODERATION, not --moderation."`

	// moderationGiven reports --moderation on the command line, not only
	// in the environment (AfterApply).
	moderationGiven bool
}

// AfterApply records which flags the command line gave (kong calls it
// after parsing).
func (c *rejectedCmd) AfterApply(kctx *kong.Context) error {
	c.moderationGiven = flagGiven(kctx, "moderation")
	return nil
}

// Run runs the command on the process's streams.
func (c *rejectedCmd) Run(g *globals) error {
	return quietPipe(func() error { return c.run(g.Ctx, processIO(g)) })
}

func (c *rejectedCmd) run(ctx context.Context, tio toolIO) error {
	rng, err := replay.ParseRange(c.Since, c.Until, time.Now())
	if err != nil {
		return usageError(err)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	requeue := len(c.Requeue) > 0 || c.RequeueAll
	b, err := c.Conn.openConfig(ctx, c.Limits.config(tio.Log))
	if err != nil {
		return toolError(err)
	}
	defer b.Close()
	r := replay.NewReader(b, replay.Config{Logger: tio.Log})
	out := replay.NewPrinter(tio.Stdout, c.Format, false)
	filter := replay.Filter{Moderator: c.Moderator}
	if !requeue {
		err := r.Rejected(ctx, rng, filter, out.Rejected)
		return toolError(errors.Join(err, out.Flush()))
	}
	var entries []replay.Entry
	if c.RequeueAll {
		err = r.Rejected(ctx, rng, filter, func(e replay.Entry) error {
			entries = append(entries, e)
			return nil
		})
	} else {
		entries, err = r.DeadLetters(ctx, c.Requeue)
	}
	if err != nil {
		return toolError(err)
	}
	modFile, err := moderationChoice(c.Moderation, c.NoModeration, c.moderationGiven)
	if err != nil {
		return err
	}
	if err := checkRooms(ctx, b, r, entries); err != nil {
		return toolError(err)
	}
	if modFile == "" && c.Moderation != "" {
		tio.Log.Warn("--no-moderation overrides CHATSTREAM_MODERATION", "file", c.Moderation)
	}
	mods, stopModeration, err := loadModeration(ctx, modFile, c.NoModeration, "requeued", b, tio.Log)
	if err != nil {
		return toolError(err)
	}
	defer stopModeration()
	pub, err := replay.StartPublisher(ctx, replay.PublisherConfig{Backend: b, Logger: tio.Log, Moderators: mods, MaxTextBytes: c.Limits.MaxText})
	if err != nil {
		return toolError(err)
	}
	bar := newProgress(tio, int64(len(entries)), "requeueing")
	done, refused, dups := 0, 0, 0
	for _, e := range entries {
		res, rerr := pub.Requeue(ctx, e)
		if rerr != nil {
			err = rerr
			break
		}
		done++
		switch {
		case res.Error != nil:
			refused++
		case res.Duplicate:
			dups++
		}
		bar.set(int64(done))
		if err = printResult(out, tio.Stdout, c.Format, res); err != nil {
			break
		}
	}
	bar.done()
	err = errors.Join(err, out.Flush(), pub.Close())
	already := ""
	if dups > 0 {
		already = fmt.Sprintf(" (%d already stored)", dups)
	}
	fmt.Fprintf(tio.Stderr, "chatstream: requeued %d of %d dead letters%s, %d refused again\n", done, len(entries), already, refused)
	if err == nil && refused > 0 {
		return &exitError{exitRefused, fmt.Errorf("%d of %d requeued messages were refused again", refused, done)}
	}
	return toolError(err)
}

// checkRooms checks, before anything is requeued, that every dead letter
// goes to its room's streams as the instances key them (checkTarget). A
// room name the pipeline refuses is left to it (reported as refused).
func checkRooms(ctx context.Context, b *redisstore.Backend, r *replay.Reader, entries []replay.Entry) error {
	checked := map[string]bool{}
	for _, e := range entries {
		if checked[e.Room] || pipeline.ValidateRoom(e.Room) != nil {
			continue
		}
		checked[e.Room] = true
		if err := checkTarget(ctx, b, r, e.Room); err != nil {
			return fmt.Errorf("dead letter %s: %w; nothing was requeued", e.ID, err)
		}
	}
	return nil
}

// checkTarget checks that a tool appending to room writes the streams the
// instances use for it: with another partition count than theirs, it
// would write a room stream under the wrong partition and onto a bus no
// instance reads for that room. A room whose history stream exists under
// b's prefix and partition count is fine, as for replay's source room.
// One without is refused (replay.ErrUnknownRoom) when its history exists
// under another partition count, or when it has none at all (a new room,
// one whose first messages were all rejected, or whose history expired)
// and a running instance reads another number of partition buses;
// otherwise the append creates the room, as an instance would.
func checkTarget(ctx context.Context, b *redisstore.Backend, r *replay.Reader, room string) error {
	err := r.CheckRoom(ctx, room)
	if !errors.Is(err, replay.ErrUnknownRoom) {
		return err
	}
	other, ferr := roomElsewhere(ctx, b, room)
	if ferr != nil {
		return ferr
	}
	if other != "" {
		return fmt.Errorf("%w, but %s exists: --partitions %d is not the instances' partition count", err, other, b.Keys().Partitions)
	}
	id, n, ierr := otherPartitions(ctx, b)
	if ierr != nil {
		return ierr
	}
	if id != "" {
		return fmt.Errorf("%w, and running instance %s reads %d partition buses: --partitions %d is not the instances' partition count",
			err, id, n, b.Keys().Partitions)
	}
	return nil
}

// checkTimeout bounds checkRooms' look-ups.
const checkTimeout = 10 * time.Second

// roomElsewhere returns the history stream of room under another partition
// count (1 to redisstore.MaxPartitions) than b's, "" when there is none.
func roomElsewhere(ctx context.Context, b *redisstore.Backend, room string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	seen := map[string]bool{b.Keys().Room(room): true}
	var keys []string
	for n := 1; n <= redisstore.MaxPartitions; n++ {
		if k := (redisstore.Keys{Prefix: b.Keys().Prefix, Partitions: n}).Room(room); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	pipe := b.Client().Pipeline()
	exists := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		exists[i] = pipe.Exists(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("look for room %q under other partition counts: %w: %w", room, pipeline.ErrUnavailable, err)
	}
	for i, c := range exists {
		if c.Val() > 0 {
			return keys[i], nil
		}
	}
	return "", nil
}

// otherPartitions returns a running instance that records another number
// of partition buses (its p00.. fields) than b's, and that number; "" when
// none does.
func otherPartitions(ctx context.Context, b *redisstore.Backend) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	infos, err := b.Instances(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("list instances: %w", err)
	}
	for _, info := range infos {
		fields, err := b.Client().HKeys(ctx, b.Keys().InstanceKey(info.ID)).Result()
		if err != nil {
			return "", 0, fmt.Errorf("read instance %s: %w: %w", info.ID, pipeline.ErrUnavailable, err)
		}
		n := 0
		for _, f := range fields {
			if len(f) == 3 && f[0] == 'p' && f[1] >= '0' && f[1] <= '9' && f[2] >= '0' && f[2] <= '9' {
				n++
			}
		}
		if n > 0 && n != b.Keys().Partitions {
			return info.ID, n, nil
		}
	}
	return "", 0, nil
}

// printResult prints a requeue's outcome. In text, a duplicate (a dead
// letter requeued again within the idempotency window, so stored only the
// first time) is marked "(already stored)"; jsonl has "duplicate":true.
func printResult(out *replay.Printer, stdout io.Writer, format string, res replay.Result) error {
	if !res.Duplicate || format == replay.FormatJSONL {
		return out.Result(res)
	}
	if err := out.Flush(); err != nil { // the line goes after those buffered
		return err
	}
	_, err := fmt.Fprintf(stdout, "%s -> %s/%s (already stored)\n", res.From, res.Room, res.Seq)
	return err
}
