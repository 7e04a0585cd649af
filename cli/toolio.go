package cli

import (
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"
)

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
