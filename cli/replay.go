package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// replayCmd prints a room's messages, follows it, or replays it into
// another room.
type replayCmd struct {
	Conn   redisFlags  `embed:""`
	Limits appendFlags `embed:""`

	Room         string `placeholder:"ROOM" xor:"source" help:"Room to read."`
	AllRooms     bool   `xor:"source" help:"Read every room, merged in seq (time) order."`
	Since        string `placeholder:"T" help:"First message: RFC 3339 time, duration ago (15m or -15m) or seq (inclusive)."`
	Until        string `placeholder:"T" help:"Last message: RFC 3339 time, duration ago or seq (inclusive)."`
	User         string `help:"Only this user's messages."`
	Grep         string `placeholder:"RE" help:"Only messages whose text matches this regular expression (RE2)."`
	Format       string `enum:"text,jsonl" default:"text" help:"Output: text (one line per message) or jsonl (one JSON object per line)."`
	Follow       bool   `short:"f" help:"Keep printing new messages until interrupted."`
	Into         string `placeholder:"ROOM" help:"Republish the selected messages into this room through the pipeline instead of printing them."`
	Speed        string `default:"1x" help:"With --into: replay speed relative to the original timing (10x, 0.5x) or max."`
	Moderation   string `env:"CHATSTREAM_MODERATION" placeholder:"FILE" help:"With --into: moderation configuration the replayed messages pass, as on the instances. --into needs it, or --no-moderation."`
	NoModeration bool   `help:"With --into: republish without moderation; the messages are stored as they are. Overrides CHATSTREAM_MODERATION, not --moderation."`

	// moderationGiven reports --moderation on the command line, not only
	// in the environment (AfterApply).
	moderationGiven bool
}

// AfterApply records which flags the command line gave (kong calls it
// after parsing).
func (c *replayCmd) AfterApply(kctx *kong.Context) error {
	c.moderationGiven = flagGiven(kctx, "moderation")
	return nil
}

// Run runs the command on the process's streams.
func (c *replayCmd) Run(g *globals) error {
	return quietPipe(func() error { return c.run(g.Ctx, processIO(g)) })
}

// query checks the flags and turns them into a query and a replay speed.
func (c *replayCmd) query(now time.Time) (replay.Query, float64, error) {
	var q replay.Query
	if c.Room == "" && !c.AllRooms {
		return q, 0, usageError(errors.New("replay needs --room or --all-rooms"))
	}
	rng, err := replay.ParseRange(c.Since, c.Until, now)
	if err != nil {
		return q, 0, usageError(err)
	}
	q = replay.Query{Room: c.Room, AllRooms: c.AllRooms, Range: rng, Filter: replay.Filter{User: c.User}, Follow: c.Follow}
	if c.Grep != "" {
		if q.Filter.Grep, err = regexp.Compile(c.Grep); err != nil {
			return q, 0, usageError(fmt.Errorf("--grep: %w", err))
		}
	}
	if c.Follow && c.Until != "" {
		return q, 0, usageError(errors.New("--until cannot be combined with --follow"))
	}
	speed, err := replay.ParseSpeed(c.Speed)
	if err != nil {
		return q, 0, usageError(err)
	}
	if err := c.Limits.Validate(); err != nil {
		return q, 0, err
	}
	if c.Into == "" {
		return q, speed, nil
	}
	switch {
	case c.Into == c.Room:
		return q, 0, usageError(fmt.Errorf("--into %s: %w", c.Into, replay.ErrSameRoom))
	case c.AllRooms:
		return q, 0, usageError(errors.New("--into cannot be combined with --all-rooms"))
	case c.Follow:
		return q, 0, usageError(errors.New("--into cannot be combined with --follow"))
	}
	if err := pipeline.ValidateRoom(c.Into); err != nil {
		return q, 0, usageError(fmt.Errorf("--into: %w", err))
	}
	if _, err := moderationChoice(c.Moderation, c.NoModeration, c.moderationGiven); err != nil {
		return q, 0, err
	}
	return q, speed, nil
}

func (c *replayCmd) run(ctx context.Context, tio toolIO) error {
	q, speed, err := c.query(time.Now())
	if err != nil {
		return err
	}
	b, err := c.Conn.openConfig(ctx, c.Limits.config(tio.Log))
	if err != nil {
		return toolError(err)
	}
	defer b.Close()
	r := replay.NewReader(b, replay.Config{Logger: tio.Log})
	out := replay.NewPrinter(tio.Stdout, c.Format, c.Follow)
	bar := &progress{}
	if tio.Terminal && !c.Follow {
		if total, err := r.Count(ctx, q); err == nil { // no bar when the count fails; the read reports errors
			bar = newProgress(tio, total, "reading")
		}
	}
	if c.Into == "" {
		q.Progress = bar.set
		err = r.Messages(ctx, q, out.Message)
		bar.done()
		return toolError(errors.Join(err, out.Flush()))
	}
	if err := checkTarget(ctx, b, r, c.Into); err != nil {
		return toolError(fmt.Errorf("--into: %w; nothing was replayed", err))
	}
	modFile, _ := moderationChoice(c.Moderation, c.NoModeration, c.moderationGiven) // checked by query
	if modFile == "" && c.Moderation != "" {
		tio.Log.Warn("--no-moderation overrides CHATSTREAM_MODERATION", "file", c.Moderation)
	}
	mods, stopModeration, err := loadModeration(ctx, modFile, c.NoModeration, "replayed", b, tio.Log)
	if err != nil {
		return toolError(err)
	}
	defer stopModeration()
	pub, err := replay.StartPublisher(ctx, replay.PublisherConfig{Backend: b, Logger: tio.Log, Moderators: mods, MaxTextBytes: c.Limits.MaxText})
	if err != nil {
		return toolError(err)
	}
	pacer := replay.NewPacer(speed)
	var sent, refused int
	err = r.Messages(ctx, q, func(e replay.Entry) error {
		if err := pacer.Wait(ctx, e.TS); err != nil {
			return err
		}
		res, err := pub.Replay(ctx, e, c.Into)
		if err != nil {
			return err
		}
		sent++
		bar.set(int64(sent))
		if res.Error != nil {
			refused++
		}
		return out.Result(res)
	})
	bar.done()
	err = errors.Join(err, out.Flush(), pub.Close())
	fmt.Fprintf(tio.Stderr, "chatstream: replayed %d messages from %s into %s, %d refused\n", sent, c.Room, c.Into, refused)
	if err == nil && refused > 0 {
		return &exitError{exitRefused, fmt.Errorf("%d of %d messages were refused", refused, sent)}
	}
	return toolError(err)
}

// moderationChoice resolves --moderation and --no-moderation for a command
// that republishes, and returns the moderation file to load ("" with
// --no-moderation). given reports --moderation on the command line: an
// explicit --no-moderation overrides a file named by CHATSTREAM_MODERATION
// (set in an instance's environment), but giving both flags on the command
// line is a usage error. The file must exist; commands that only read
// never call this, so they ignore a CHATSTREAM_MODERATION that names a
// file of another machine.
func moderationChoice(path string, skip, given bool) (string, error) {
	switch {
	case skip && given && path != "":
		return "", usageError(errors.New("give --moderation or --no-moderation, not both"))
	case skip:
		return "", nil
	case path == "":
		return "", usageError(ErrModerationUnset)
	}
	if _, err := os.Stat(path); err != nil {
		from := ""
		if !given {
			from = " (CHATSTREAM_MODERATION)"
		}
		return "", usageError(fmt.Errorf("--moderation%s: %w", from, err))
	}
	return path, nil
}

// flagGiven reports whether the flag --name is on kctx's command line, not
// only in the environment or its default.
func flagGiven(kctx *kong.Context, name string) bool {
	for _, p := range kctx.Path {
		if p.Flag != nil && !p.Resolved && p.Flag.Name == name {
			return true
		}
	}
	return false
}
