// Command custommoderator is a chatstream server with a moderator kind of
// its own, "mute", next to the built-in ones: the way to extend moderation
// in Go. It registers the kind from an init function, so a configuration
// file can name it:
//
//	moderators:
//	  - kind: mute
//	    users: [mallory]
//	    reason: you are muted here
//	  - kind: wordlist
//	    words: [darn]
//
// and serves like `chatstream serve` (with a subset of its flags):
//
//	go run ./examples/custommoderator --moderation moderation.yaml
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/pipeline/moderation"
	// The built-in kinds, so the file may mix them with mute.
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
)

// MuteKind is the configuration kind of the mute moderator.
const MuteKind = "mute"

func init() {
	// Like a database/sql driver: registering makes the kind available to
	// every configuration file this binary loads.
	moderation.Register(MuteKind, newMute)
}

// MuteConfig is the mute moderator's part of a configuration entry.
type MuteConfig struct {
	// Users are the muted users. Required.
	Users []string `yaml:"users"`
	// Reason is shown to a muted user. Default "you are muted".
	Reason string `yaml:"reason"`
}

// Mute rejects every message of the muted users. It is safe for concurrent
// use (it never changes after it is built).
type Mute struct {
	users  []string
	reason string
}

// newMute is the kind's factory: it decodes the entry's settings (unknown
// fields are errors with their line) and checks them.
func newMute(spec moderation.Spec, _ moderation.Env) (moderation.Moderator, error) {
	var cfg MuteConfig
	if err := spec.Decode(&cfg); err != nil {
		return nil, err
	}
	if len(cfg.Users) == 0 {
		return nil, spec.Errorf("users", "give at least one user to mute")
	}
	if cfg.Reason == "" {
		cfg.Reason = "you are muted"
	}
	return &Mute{users: cfg.Users, reason: cfg.Reason}, nil
}

// Moderate rejects m when its sender is muted.
func (m *Mute) Moderate(_ context.Context, msg *moderation.Message) (moderation.Decision, error) {
	if slices.Contains(m.users, msg.User) {
		return moderation.Rejected(m.reason), nil
	}
	return moderation.Accepted(), nil
}

// Describe summarises the settings for `chatstream moderation check`-like
// output.
func (m *Mute) Describe() string { return fmt.Sprintf("users=%v", m.users) }

// cli is the command line: the serve flags this example needs.
type cli struct {
	Addr        string `default:":8080" env:"CHATSTREAM_ADDR" help:"Listen address."`
	Redis       string `env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis backend (empty: in memory, one instance)."`
	RedisPrefix string `default:"chat" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of every Redis key."`
	Partitions  int    `default:"16" env:"CHATSTREAM_PARTITIONS" help:"Partition bus streams (same on every instance)."`
	Moderation  string `required:"" env:"CHATSTREAM_MODERATION" placeholder:"FILE" help:"Moderation config file; may use the mute kind."`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and serves until ctx is done; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	exited, exitCode := false, 0
	parser, err := kong.New(&c,
		kong.Name("custommoderator"),
		kong.Description("A chatstream server with the custom moderator kind \"mute\"."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exited, exitCode = true, code }),
	)
	if err != nil {
		fmt.Fprintln(stderr, "custommoderator:", err)
		return 2
	}
	_, err = parser.Parse(args)
	if exited { // --help
		return exitCode
	}
	if err != nil {
		fmt.Fprintln(stderr, "custommoderator:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := serve(ctx, c, log); err != nil {
		fmt.Fprintln(stderr, "custommoderator:", err)
		return 1
	}
	return 0
}

// serve assembles a server as `chatstream serve` does and runs it.
func serve(ctx context.Context, c cli, log *slog.Logger) error {
	cfg := server.Config{Addr: c.Addr, Logger: log}
	env := moderation.Env{Logger: log, RedisPrefix: c.RedisPrefix}
	if c.Redis != "" {
		b, err := redisstore.New(redisstore.Config{URL: c.Redis, Prefix: c.RedisPrefix, Partitions: c.Partitions, Logger: log})
		if err != nil {
			return err
		}
		cfg.Backend, env.Redis = b, b.Client()
	}
	closeBackend := func() {
		if cfg.Backend != nil {
			_ = cfg.Backend.Close() // the server never started
		}
	}
	chain, err := moderation.LoadFile(c.Moderation, env)
	if err != nil {
		closeBackend()
		return err
	}
	cfg.Moderators = chain.Moderators()
	srv, err := server.New(cfg)
	if err != nil {
		closeBackend()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := chain.Run(ctx); err != nil {
			log.Warn("moderation stopped", "err", err)
		}
	})
	err = srv.Run(ctx)
	cancel()
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Compile-time check that Mute is a moderator.
var _ moderation.Moderator = (*Mute)(nil)
