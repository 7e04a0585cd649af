package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatstream/chatstream/replay"
)

// rejectedCmd lists dead letters and sends them through the pipeline again.
type rejectedCmd struct {
	Conn redisFlags `embed:""`

	Since        string   `placeholder:"T" help:"First dead letter: RFC 3339 time, duration ago (15m or -15m) or entry ID (inclusive)."`
	Until        string   `placeholder:"T" help:"Last dead letter: RFC 3339 time, duration ago or entry ID (inclusive)."`
	Moderator    string   `help:"Only dead letters rejected by this moderator."`
	Format       string   `enum:"text,jsonl" default:"text" help:"Output: text or jsonl."`
	Requeue      []string `placeholder:"ID" xor:"requeue" help:"Send these dead letters (entry IDs, as listed) through the pipeline again."`
	RequeueAll   bool     `xor:"requeue" help:"Send every listed dead letter (after --since/--until/--moderator) through the pipeline again."`
	Moderation   string   `type:"existingfile" env:"CHATSTREAM_MODERATION" placeholder:"FILE" xor:"moderation" help:"Moderation configuration the requeued messages pass, as on the instances. A requeue needs it, or --no-moderation."`
	NoModeration bool     `xor:"moderation" help:"Requeue without moderation: the messages are stored as they are, even those moderation refused."`
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
	b, err := c.Conn.open(ctx, tio.Log)
	if err != nil {
		return toolError(err)
	}
	defer b.Close()
	r := replay.NewReader(b, replay.Config{Logger: tio.Log})
	out := replay.NewPrinter(tio.Stdout, c.Format, false)
	filter := replay.Filter{Moderator: c.Moderator}
	if len(c.Requeue) == 0 && !c.RequeueAll {
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
	mods, stopModeration, err := loadModeration(ctx, c.Moderation, c.NoModeration, "requeued", b, tio.Log)
	if err != nil {
		return toolError(err)
	}
	defer stopModeration()
	pub, err := replay.StartPublisher(ctx, replay.PublisherConfig{Backend: b, Logger: tio.Log, Moderators: mods})
	if err != nil {
		return toolError(err)
	}
	bar := newProgress(tio, int64(len(entries)), "requeueing")
	done, refused := 0, 0
	for _, e := range entries {
		res, rerr := pub.Requeue(ctx, e)
		if rerr != nil {
			err = rerr
			break
		}
		done++
		if res.Error != nil {
			refused++
		}
		bar.set(int64(done))
		if err = out.Result(res); err != nil {
			break
		}
	}
	bar.done()
	err = errors.Join(err, out.Flush(), pub.Close())
	fmt.Fprintf(tio.Stderr, "chatstream: requeued %d of %d dead letters, %d refused again\n", done, len(entries), refused)
	if err == nil && refused > 0 {
		return &exitError{exitRefused, fmt.Errorf("%d of %d requeued messages were refused again", refused, done)}
	}
	return toolError(err)
}
