package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/dryrun"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// moderationCmd groups the moderation tools.
type moderationCmd struct {
	Check moderationCheckCmd `cmd:"" help:"Validate a moderation config file and print its chain. Exit code 0: valid, 1: invalid."`
	Test  moderationTestCmd  `cmd:"" help:"Dry-run a moderation config on traffic recorded in Redis; writes nothing."`
}

// Exit codes of the moderation tools, shared with the stream tools
// (exit.go): 1 is an invalid config or any other error.
const (
	modExitInvalid     = 1
	modExitUsage       = exitUsage
	modExitUnknownRoom = exitNotFound
	modExitRedis       = exitUnavailable
)

func modExitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// moderationCheckCmd validates a config file.
type moderationCheckCmd struct {
	File string `arg:"" placeholder:"FILE" help:"Moderation config file (YAML or JSON)."`
}

// Run validates the file and prints the chain on stdout.
func (c *moderationCheckCmd) Run(g *globals) error {
	return c.run(g.Stdout, g.Log)
}

func (c *moderationCheckCmd) run(stdout io.Writer, log *slog.Logger) error {
	// DryRun: nothing is connected, so the Redis-backed limits load too.
	chain, err := moderation.LoadFile(c.File, moderation.Env{Logger: log, DryRun: true})
	if err != nil {
		return &exitError{code: modExitInvalid, err: err}
	}
	infos := chain.Describe()
	if len(infos) == 0 {
		fmt.Fprintf(stdout, "%s: valid, no moderators: every message is accepted\n", c.File)
		return nil
	}
	fmt.Fprintf(stdout, "%s: valid, %d moderators, run in this order:\n", c.File, len(infos))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for i, in := range infos {
		fmt.Fprintf(tw, "  %d.\t%s\t%s\ton_error=%s\t%s\n", i+1, in.Name, in.Kind, in.OnError, in.Summary)
	}
	return tw.Flush()
}

// moderationTestCmd replays recorded traffic through a chain.
type moderationTestCmd struct {
	Config      string   `required:"" placeholder:"FILE" help:"Moderation config file to try."`
	Room        []string `placeholder:"ROOM" help:"Room to replay (repeatable)."`
	AllRooms    bool     `help:"Replay every room, merged in time order."`
	Since       string   `default:"1h" help:"Start: an RFC 3339 time, a duration ago (90m) or a seq."`
	Until       string   `help:"End (inclusive): an RFC 3339 time, a duration ago or a seq. Default: now."`
	JSON        bool     `name:"json" help:"Print one JSON object per message, then a summary object (JSON lines)."`
	Width       int      `default:"60" help:"Characters of each text shown (text output)."`
	Batch       int64    `default:"500" help:"Entries read per XRANGE."`
	Redis       string   `required:"" env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis holding the traffic: redis://host:port/db, or host:port,... for a Cluster."`
	RedisPrefix string   `default:"${default_redis_prefix}" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of the deployment's keys."`
	Partitions  int      `default:"${default_partitions}" env:"CHATSTREAM_PARTITIONS" help:"Partitions of the deployment (as given to serve)."`
}

// Run replays the traffic, printing on stdout and progress on stderr.
func (c *moderationTestCmd) Run(g *globals) error {
	// go-redis logs every failed dial on its own; this command reports an
	// unreachable Redis itself, once.
	redis.SetLogger(modSilentRedis{})
	return c.run(g.Ctx, g.Stdout, g.Stderr, g.Log)
}

// modSilentRedis discards go-redis's internal log lines.
type modSilentRedis struct{}

// Printf discards the line.
func (modSilentRedis) Printf(context.Context, string, ...any) {}

// Validate checks the flags that kong cannot.
func (c *moderationTestCmd) Validate() error {
	switch {
	case len(c.Room) == 0 && !c.AllRooms:
		return errors.New("give --room ROOM (repeatable) or --all-rooms")
	case len(c.Room) > 0 && c.AllRooms:
		return errors.New("give --room or --all-rooms, not both")
	case c.Batch <= 0 || c.Width < 0:
		return errors.New("--batch must be positive and --width not negative")
	}
	return nil
}

// modRedisTimeout bounds each Redis round trip of a dry run.
const modRedisTimeout = 5 * time.Second

func (c *moderationTestCmd) run(ctx context.Context, stdout io.Writer, stderr io.Writer, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return &exitError{code: modExitUsage, err: err}
	}
	now := time.Now()
	start, err := replay.ParseBound(c.Since, now)
	if err != nil {
		return modExitf(modExitUsage, "--since: %w", err)
	}
	end, err := replay.ParseBound(c.Until, now)
	if err != nil {
		return modExitf(modExitUsage, "--until: %w", err)
	}
	if start == "" {
		start = "-"
	}
	if end == "" {
		// Every entry of this millisecond: XRANGE completes a bare
		// millisecond end with the largest sequence number.
		end = strconv.FormatInt(now.UnixMilli(), 10)
	} else if start != "-" && pipeline.CompareSeq(start, end) > 0 {
		return modExitf(modExitUsage, "--since (%s) is after --until (%s)", start, end)
	}
	// The chain keeps every state in memory and gets no Redis client: a dry
	// run cannot write anywhere.
	chain, err := moderation.LoadFile(c.Config, moderation.Env{Logger: log, DryRun: true})
	if err != nil {
		return &exitError{code: modExitInvalid, err: err}
	}
	b, err := redisstore.New(redisstore.Config{URL: c.Redis, Prefix: c.RedisPrefix, Partitions: c.Partitions, Logger: log, Timeout: modRedisTimeout})
	if err != nil {
		return &exitError{code: modExitUsage, err: redactError(err, c.Redis)}
	}
	defer b.Close()
	pctx, cancel := context.WithTimeout(ctx, modRedisTimeout)
	err = b.Ping(pctx)
	cancel()
	if err != nil {
		return modExitf(modExitRedis, "cannot reach Redis at %s: %w", redactURLs(c.Redis), redactError(err, c.Redis))
	}
	rooms, err := c.rooms(ctx, b)
	if err != nil {
		return err
	}
	rng, err := replay.ParseRange(c.Since, c.Until, now)
	if err != nil {
		return modExitf(modExitUsage, "%w", err)
	}
	tio := toolIO{Stdout: stdout, Stderr: stderr, Log: log, Terminal: isTerminal(stderr) && !isTerminal(stdout)}
	reader := replay.NewReader(b, replay.Config{PageSize: int(c.Batch), Logger: log})
	q := replay.Query{Rooms: rooms, Range: rng}
	bar := &progress{}
	if len(rooms) > 0 && tio.Terminal {
		if total, err := reader.Count(ctx, q); err == nil {
			bar = newProgress(tio, total, "replaying")
			q.Progress = bar.set
		}
	}
	_, err = dryrun.Run(ctx, reader, q, dryrun.Config{
		Chain: chain, Out: stdout, JSON: c.JSON, Width: c.Width, Since: start, Until: end,
	})
	bar.done()
	switch {
	case errors.Is(err, replay.ErrUnknownRoom):
		return &exitError{code: modExitUnknownRoom, err: err}
	case errors.Is(err, pipeline.ErrUnavailable):
		return &exitError{code: modExitRedis, err: err}
	}
	return err
}

// rooms returns the rooms to replay, checking that named ones exist.
func (c *moderationTestCmd) rooms(ctx context.Context, b *redisstore.Backend) ([]string, error) {
	if c.AllRooms {
		rooms, err := b.Rooms(ctx)
		if err != nil {
			return nil, modExitf(modExitRedis, "list rooms: %w", err)
		}
		return rooms, nil
	}
	rooms := slices.Compact(slices.Sorted(slices.Values(c.Room)))
	for _, room := range rooms {
		if err := pipeline.ValidateRoom(room); err != nil {
			return nil, modExitf(modExitUsage, "--room %q: %w", room, err)
		}
		n, err := b.Client().Exists(ctx, b.Keys().Room(room)).Result()
		if err != nil {
			return nil, modExitf(modExitRedis, "room %s: %w", room, err)
		}
		if n == 0 {
			return nil, &exitError{code: modExitUnknownRoom, err: c.unknownRoom(ctx, b, room)}
		}
	}
	return rooms, nil
}

// unknownRoom explains a room without a stream, naming some that exist.
func (c *moderationTestCmd) unknownRoom(ctx context.Context, b *redisstore.Backend, room string) error {
	msg := fmt.Sprintf("room %q has no stream in Redis (prefix %q, %d partitions)", room, c.RedisPrefix, c.Partitions)
	known, err := b.Rooms(ctx)
	switch {
	case err != nil:
	case len(known) == 0:
		msg += "; no room has one: check --redis-prefix and --partitions"
	default:
		const show = 10
		list := strings.Join(known[:min(len(known), show)], ", ")
		if len(known) > show {
			list += fmt.Sprintf(", ... (%d rooms)", len(known))
		}
		msg += "; rooms: " + list
	}
	return errors.New(msg)
}
