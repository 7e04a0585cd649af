// Package cli is the chatstream command line: the gateway (serve, the
// default command) and the tools (moderation, replay, rejected, streams,
// healthcheck). cmd/chatstream calls Main; a custom binary that adds its own
// moderators through init functions calls it too.
//
// Every flag has a CHATSTREAM_* environment variable; `chatstream --help`
// lists them with their defaults.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/version"
)

// redisLoggerOnce sets go-redis's process-wide logger once, from the first
// command line run (the process's own; tests may run several).
var redisLoggerOnce sync.Once

// cli is the command line: global flags and subcommands.
type cli struct {
	LogFormat string `enum:"text,json" default:"text" env:"CHATSTREAM_LOG_FORMAT" help:"Log format: text or json."`
	LogLevel  string `enum:"debug,info,warn,error" default:"info" env:"CHATSTREAM_LOG_LEVEL" help:"Lowest log level written."`

	Serve       serveCmd         `cmd:"" default:"withargs" help:"Run a chatstream gateway (the default command)."`
	Healthcheck healthcheckCmd   `cmd:"" help:"Exit 0 when a running gateway is ready (for container healthchecks)."`
	Version     versionCmd       `cmd:"" help:"Print the version, VCS revision and time, and Go version."`
	VersionFlag kong.VersionFlag `name:"version" help:"Print the version and exit."`

	Replay   replayCmd   `cmd:"" help:"Print, follow or republish a room's stored messages (reads Redis)."`
	Rejected rejectedCmd `cmd:"" help:"List dead-lettered messages with their reasons, or requeue them."`
	Streams  streamsCmd  `cmd:"" help:"Show every stream's length, bounds and memory, and each instance's delivery lag."`
	Token    tokenCmd    `cmd:"" help:"Print a signed token (HS256) for --auth jwt, for development and tests."`

	Moderation moderationCmd `cmd:"" help:"Check moderation configs and dry-run them on recorded traffic."`
}

// globals is what every subcommand receives from the top-level flags.
type globals struct {
	Log *slog.Logger
	Ctx context.Context
	// Stdout and Stderr are the command's output streams.
	Stdout, Stderr io.Writer
}

// Main runs the chatstream command line with args (without the program
// name) until it finishes or SIGINT/SIGTERM, and returns the exit code. A
// custom binary that registers its own moderators (or anything else through
// init functions) calls it from its main:
//
//	func main() { os.Exit(cli.Main(os.Args[1:])) }
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, os.Stdout, os.Stderr)
}

// Run is Main with its context and output streams given: it parses args,
// runs the command until it finishes or ctx is done, and returns the exit
// code (0 after --help, 2 for usage errors).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	exited, helpCode := false, 0
	parser, err := kong.New(&c,
		kong.Name("chatstream"),
		kong.Description("A distributed chat backbone: WebSocket gateways, a Watermill pipeline and Redis Streams."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Writers(stdout, stderr),
		// "--since -15m": a flag's value may start with a hyphen.
		kong.WithHyphenPrefixedParameters(true),
		kong.Exit(func(code int) { exited, helpCode = true, code }),
		defaults(),
		kong.Vars{"version": version.Read().String()},
	)
	if err != nil {
		fmt.Fprintln(stderr, "chatstream:", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if exited { // --help, or a usage error kong has reported
		return helpCode
	}
	if err != nil {
		fmt.Fprintln(stderr, "chatstream:", err)
		return 2
	}
	g := &globals{Log: newLogger(stderr, c.LogFormat, c.LogLevel), Ctx: ctx, Stdout: stdout, Stderr: stderr}
	redisLoggerOnce.Do(func() { redis.SetLogger(&redisstore.ClientLogger{Log: g.Log}) })
	if err := kctx.Run(g); err != nil {
		fmt.Fprintln(stderr, "chatstream:", err)
		return exitCode(err)
	}
	return 0
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // kong's enum has checked it
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// exitCode maps an error to the process exit code: 1 unless the error says
// otherwise.
func exitCode(err error) int {
	var ce interface{ ExitCode() int }
	if errors.As(err, &ce) {
		return ce.ExitCode()
	}
	return 1
}

// versionCmd prints the build.
type versionCmd struct{}

// Run prints the version line.
func (versionCmd) Run(g *globals) error {
	_, err := fmt.Fprintln(g.Stdout, version.Read().String())
	return err
}
