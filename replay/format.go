package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/chatstream/chatstream/pipeline"
)

// Output formats of Printer.
const (
	// FormatText prints one human-readable line per entry.
	FormatText = "text"
	// FormatJSONL prints one JSON object per line (for jq).
	FormatJSONL = "jsonl"
)

// Printer writes entries and results in one format, one line each. It
// buffers; with Flush set every line is flushed as it is written (for
// follow mode). It is not safe for concurrent use.
type Printer struct {
	w      *bufio.Writer
	format string
	flush  bool
}

// NewPrinter returns a Printer writing to w in format (FormatText or
// FormatJSONL; anything else prints text).
func NewPrinter(w io.Writer, format string, flushEachLine bool) *Printer {
	return &Printer{w: bufio.NewWriter(w), format: format, flush: flushEachLine}
}

// Message prints a stored message:
//
//	2026-11-26T03:00:01.123Z lobby alice: hi
func (p *Printer) Message(e Entry) error {
	if p.format == FormatJSONL {
		return p.json(e.Record())
	}
	return p.line(fmt.Sprintf("%s %s %s: %s", e.TS.UTC().Format(pipeline.TimeFormat), e.Room, Escape(e.User), Escape(e.Text)))
}

// Rejected prints a dead letter:
//
//	2026-11-26T03:00:01.123Z 1795716957201-0 lobby alice rejected by wordlist: "reason": text
func (p *Printer) Rejected(e Entry) error {
	if p.format == FormatJSONL {
		return p.json(e.Rejected())
	}
	rec := e.Rejected()
	by := rec.Code
	if rec.Moderator != "" {
		by += " by " + rec.Moderator
	}
	return p.line(fmt.Sprintf("%s %s %s %s %s: %q: %s", rec.TS, rec.ID, rec.Room, Escape(rec.User), by, rec.Reason, Escape(rec.Text)))
}

// Result prints the outcome of a republished message:
//
//	lobby/1795716957201-0 -> lobby2/1795716990000-0
//	1795716957201-0 -> lobby refused rejected by wordlist: "reason"
func (p *Printer) Result(r Result) error {
	if p.format == FormatJSONL {
		return p.json(r)
	}
	if r.Error != nil {
		by := r.Error.Code
		if r.Error.Moderator != "" {
			by += " by " + r.Error.Moderator
		}
		return p.line(fmt.Sprintf("%s -> %s refused %s: %q", r.From, r.Room, by, r.Error.Reason))
	}
	return p.line(fmt.Sprintf("%s -> %s/%s", r.From, r.Room, r.Seq))
}

// Flush writes out what is buffered.
func (p *Printer) Flush() error { return p.w.Flush() }

func (p *Printer) json(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("replay: encode: %w", err)
	}
	return p.line(string(b))
}

func (p *Printer) line(s string) error {
	if _, err := p.w.WriteString(s); err != nil {
		return err
	}
	if err := p.w.WriteByte('\n'); err != nil {
		return err
	}
	if p.flush {
		return p.w.Flush()
	}
	return nil
}

// Escape makes s fit on one line: a backslash becomes \\, newline \n,
// carriage return \r, and other control characters (but tab) and the
// Unicode line separators \uXXXX.
func Escape(s string) string {
	if !strings.ContainsFunc(s, needsEscape) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return r == '\\' || r != '\t' && unicode.IsControl(r) || r == 0x2028 || r == 0x2029
}
