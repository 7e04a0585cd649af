package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp/syntax"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// Exit codes of the tools (replay, rejected, streams), documented in
// docs/STREAMS.md so scripts can branch on them.
const (
	// exitFailure is any other failure.
	exitFailure = 1
	// exitUsage is a bad flag, time, range or pattern.
	exitUsage = 2
	// exitNotFound is an unknown room or dead-letter ID.
	exitNotFound = 3
	// exitUnavailable is a Redis that cannot be reached.
	exitUnavailable = 4
	// exitRefused is a run in which some republished messages were refused.
	exitRefused = 5
	// exitInterrupted is a read cut short by SIGINT or SIGTERM (128+2).
	exitInterrupted = 130
)

// progressThreshold is the number of entries from which a read shows a
// progress bar (when stderr is a terminal and stdout is not).
const progressThreshold = 2000

// redisFlags select the Redis deployment the tools work on.
type redisFlags struct {
	Redis       string `required:"" env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis: redis://host:port/db, or host:port,host:port,... for a Cluster."`
	RedisPrefix string `default:"chat" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of every Redis key."`
	Partitions  int    `default:"16" env:"CHATSTREAM_PARTITIONS" help:"Partition bus streams (as configured on the instances)."`
}

// toolIO is where a tool writes; Run uses the process's streams, tests use
// buffers.
type toolIO struct {
	Stdout, Stderr io.Writer
	Log            *slog.Logger
	// Terminal reports whether stderr is a terminal and stdout is not: a
	// progress bar on stderr then does not mix with the output.
	Terminal bool
}

func processIO(g *globals) toolIO {
	return toolIO{
		Stdout: g.Stdout, Stderr: g.Stderr, Log: g.Log,
		Terminal: isTerminal(g.Stderr) && !isTerminal(g.Stdout),
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// open connects to the deployment's Redis and checks that it answers.
func (f redisFlags) open(ctx context.Context, log *slog.Logger) (*redisstore.Backend, error) {
	b, err := redisstore.New(redisstore.Config{URL: f.Redis, Prefix: f.RedisPrefix, Partitions: f.Partitions, Logger: log})
	if err != nil {
		return nil, usageError(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Ping(pctx); err != nil {
		_ = b.Close() // nothing was used
		return nil, fmt.Errorf("redis %s unreachable: %w", f.Redis, err)
	}
	return b, nil
}

// exitError gives an error the process exit code main uses.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode returns the process exit code.
func (e *exitError) ExitCode() int { return e.code }

func usageError(err error) error { return &exitError{exitUsage, err} }

// toolError gives err the exit code of its kind; nil stays nil, and an
// error that already has a code keeps it.
func toolError(err error) error {
	var ee *exitError
	var se *syntax.Error
	var pe *pipeline.Error
	switch {
	case err == nil, errors.As(err, &ee):
		return err
	case errors.Is(err, replay.ErrUnknownRoom), errors.Is(err, replay.ErrNotFound):
		return &exitError{exitNotFound, err}
	case errors.Is(err, replay.ErrBadRange), errors.As(err, &se), errors.Is(err, replay.ErrSameRoom),
		errors.As(err, &pe) && pe.Code == pipeline.CodeInvalid:
		return usageError(err)
	case errors.Is(err, pipeline.ErrUnavailable):
		return &exitError{exitUnavailable, err}
	case errors.Is(err, context.Canceled):
		return &exitError{exitInterrupted, errors.New("interrupted")}
	}
	return &exitError{exitFailure, err}
}

// quietPipe runs fn with SIGPIPE caught, so a write to a closed stdout
// (`| head`) fails with EPIPE instead of killing the process, and turns
// that failure into a quiet success.
func quietPipe(fn func() error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGPIPE)
	defer signal.Stop(sig)
	err := fn()
	if errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return err
}

// progress is a progress bar on stderr for long reads, or nothing.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress shows a bar of total steps when io.Terminal is set and total
// reaches progressThreshold.
func newProgress(tio toolIO, total int64, what string) *progress {
	if !tio.Terminal || total < progressThreshold {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(tio.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

// set moves the bar to n (capped at its total: streams grow while read).
func (p *progress) set(n int64) {
	if p.bar != nil {
		_ = p.bar.Set64(min(n, p.bar.GetMax64())) // rendering to stderr is best effort
	}
}

// done removes the bar.
func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish() // rendering to stderr is best effort
	}
}
