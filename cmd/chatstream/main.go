// Command chatstream runs the chatstream gateway and its tools.
//
//	chatstream [serve] [flags]   run a gateway (the default command)
//
// Every flag has a CHATSTREAM_* environment variable; `chatstream --help`
// lists them with their defaults.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

// cli is the command line: global flags and subcommands.
type cli struct {
	LogFormat string `enum:"text,json" default:"text" env:"CHATSTREAM_LOG_FORMAT" help:"Log format: text or json."`
	LogLevel  string `enum:"debug,info,warn,error" default:"info" env:"CHATSTREAM_LOG_LEVEL" help:"Lowest log level written."`

	Serve serveCmd `cmd:"" default:"withargs" help:"Run a chatstream gateway (the default command)."`

	Replay   replayCmd   `cmd:"" help:"Print, follow or republish a room's stored messages (reads Redis)."`
	Rejected rejectedCmd `cmd:"" help:"List dead-lettered messages with their reasons, or requeue them."`
	Streams  streamsCmd  `cmd:"" help:"Show every stream's length, bounds and memory, and each instance's delivery lag."`

	Moderation moderationCmd `cmd:"" help:"Check moderation configs and dry-run them on recorded traffic."`
}

// globals is what every subcommand receives from the top-level flags.
type globals struct {
	Log *slog.Logger
	Ctx context.Context
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("chatstream"),
		kong.Description("A distributed chat backbone: WebSocket gateways, a Watermill pipeline and Redis Streams."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatstream:", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		parser.Errorf("%s", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{Log: newLogger(c.LogFormat, c.LogLevel), Ctx: ctx}
	if err := kctx.Run(g); err != nil {
		fmt.Fprintln(os.Stderr, "chatstream:", err)
		return exitCode(err)
	}
	return 0
}

func newLogger(format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // kong's enum has checked it
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
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
