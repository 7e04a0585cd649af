package cli

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"regexp/syntax"
	"syscall"

	"github.com/chatstream/chatstream/pipeline"
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
