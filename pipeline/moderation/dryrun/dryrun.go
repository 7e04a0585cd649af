// Package dryrun tries a moderation chain on recorded traffic: it reads
// stored messages through a replay.Reader, evaluates each with a
// moderation.Chain, prints every decision (a table row, or a JSON line),
// and ends with a summary of the decisions of each moderator and rule.
// `chatstream moderation test` is built on it.
//
// A dry run writes nowhere: the Source only reads, and the chain should be
// loaded with moderation.Env.DryRun so that every state it keeps (flood
// histories, rate limits) stays in memory.
package dryrun

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/replay"
)

// FlushEvery is how many rows of table output are aligned together and
// written at once: a column is as wide as its widest cell among them.
const FlushEvery = 1000

// Source yields stored messages in seq order. *replay.Reader is one.
type Source interface {
	// Messages calls emit with every stored message q selects, in seq
	// order, and returns emit's first error.
	Messages(ctx context.Context, q replay.Query, emit func(replay.Entry) error) error
}

var _ Source = (*replay.Reader)(nil)

// Config configures a Run. A zero field takes the default in its comment.
type Config struct {
	// Chain evaluates every message. Required.
	Chain *moderation.Chain
	// Out receives the decisions and the summary. Required.
	Out io.Writer
	// JSON prints one Decision object per message, then a Summary object
	// (JSON lines), instead of a table and a text summary. Default false.
	JSON bool
	// Width is the most characters of a text, reason or rewrite shown in
	// the table; 0 (the default) shows them whole.
	Width int
	// Since and Until are the first and last stream IDs read, as the
	// summary shows them. They do not select anything: q.Range does.
	Since, Until string
}

// Run reads the messages of q.Rooms that q selects, in seq order, evaluates
// every one with cfg.Chain and prints its decision, then prints the summary
// and returns it. No room (an empty q.Rooms) reads nothing and prints an
// empty summary. q.Skipped, when set, is still called for every entry that
// cannot be decoded; Run counts them in Summary.Undecodable.
//
// A read error is returned as the Source returned it (from a
// replay.Reader: replay.ErrUnknownRoom, pipeline.ErrUnavailable, ...), and
// nothing more is printed.
func Run(ctx context.Context, src Source, q replay.Query, cfg Config) (Summary, error) {
	r := &run{cfg: cfg, sum: Summary{Type: "summary", Rooms: q.Rooms, Since: cfg.Since, Until: cfg.Until}}
	skipped := q.Skipped
	q.Skipped = func(stream string, err error) {
		r.sum.Undecodable++
		if skipped != nil {
			skipped(stream, err)
		}
	}
	var tw *tabwriter.Writer
	if !cfg.JSON {
		tw = tabwriter.NewWriter(cfg.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tROOM\tUSER\tDECISION\tMODERATOR\tREASON / REWRITE\tTEXT")
	}
	enc := json.NewEncoder(cfg.Out)
	enc.SetEscapeHTML(false)
	if len(q.Rooms) > 0 {
		n := 0
		err := src.Messages(ctx, q, func(e replay.Entry) error {
			if err := r.one(ctx, e, tw, enc); err != nil {
				return err
			}
			n++
			if tw != nil && n%FlushEvery == 0 {
				return tw.Flush()
			}
			return nil
		})
		if err != nil {
			return r.sum, err
		}
	}
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return r.sum, err
		}
	}
	return r.sum, r.summary(enc)
}

// run is the state of one Run.
type run struct {
	cfg Config
	sum Summary
}

// one evaluates and prints one entry: a table row on tw, or a JSON line on
// enc when tw is nil.
func (r *run) one(ctx context.Context, e replay.Entry, tw *tabwriter.Writer, enc *json.Encoder) error {
	at, _ := replay.IDTime(e.ID) // Redis only hands out well-formed IDs
	room := e.Room
	m := moderation.Message{
		ID: e.MsgID, Room: room, User: e.User, ConnID: e.Meta[pipeline.MetaConnID],
		Text: e.Text, Time: at, Metadata: e.Meta,
	}
	res := r.cfg.Chain.Evaluate(ctx, m)
	r.sum.Messages++
	switch res.Action {
	case moderation.Accept:
		r.sum.Accepted++
	case moderation.Reject:
		r.sum.Rejected++
	case moderation.Rewrite:
		r.sum.Rewritten++
	}
	if tw == nil {
		out := Decision{
			Type: "message", Seq: e.ID, Time: at.Format(pipeline.TimeFormat), Room: room, User: m.User,
			Decision: res.Action.String(), Moderator: res.Moderator, Rule: res.Rule, Text: m.Text,
		}
		switch res.Action {
		case moderation.Reject:
			out.Code, out.Reason, out.RetryAfterMS = res.Code, res.Reason, res.RetryAfter.Milliseconds()
		case moderation.Rewrite:
			out.Rewritten, out.Notes = res.Text, res.Notes
		}
		return enc.Encode(out)
	}
	who, detail := res.Moderator, ""
	if res.Rule != "" {
		who += "/" + res.Rule
	}
	switch res.Action {
	case moderation.Reject:
		detail = oneLine(res.Reason, r.cfg.Width)
		if res.Code == pipeline.CodeRateLimited {
			detail = oneLine(fmt.Sprintf("rate_limited (%s): %s", res.RetryAfter, res.Reason), r.cfg.Width)
		}
	case moderation.Rewrite:
		detail = "→ " + oneLine(res.Text, r.cfg.Width)
	}
	_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
		at.Format(pipeline.TimeFormat), room, m.User, res.Action, orDash(who), orDash(detail), oneLine(m.Text, r.cfg.Width))
	return err
}

// summary completes r.sum with the chain's counters and prints it: a JSON
// line on enc, or text and a table.
func (r *run) summary(enc *json.Encoder) error {
	sum := &r.sum
	stats := r.cfg.Chain.Stats()
	sum.Moderators = []ModeratorSummary{}
	for _, in := range r.cfg.Chain.Describe() {
		st := stats[in.Name]
		ms := ModeratorSummary{Name: in.Name, Kind: in.Kind, Accepted: st.Accepted, Rejected: st.Rejected, Rewritten: st.Rewritten, Errors: st.Errors}
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for k := range st.Rules {
				if !yield(k) {
					return
				}
			}
		}) {
			rc := st.Rules[name]
			ms.Rules = append(ms.Rules, RuleSummary{Name: name, Rejected: rc.Rejected, Rewritten: rc.Rewritten, Errors: rc.Errors})
		}
		sum.Moderators = append(sum.Moderators, ms)
	}
	if r.cfg.JSON {
		return enc.Encode(sum)
	}
	out := r.cfg.Out
	fmt.Fprintf(out, "\n%d messages in %d rooms: %d accepted, %d rejected, %d rewritten", sum.Messages, len(sum.Rooms), sum.Accepted, sum.Rejected, sum.Rewritten)
	if sum.Undecodable > 0 {
		fmt.Fprintf(out, " (%d undecodable entries skipped)", sum.Undecodable)
	}
	fmt.Fprintln(out)
	if len(sum.Moderators) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODERATOR\tKIND\tACCEPTED\tREJECTED\tREWRITTEN\tERRORS")
	for _, m := range sum.Moderators {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", m.Name, m.Kind, m.Accepted, m.Rejected, m.Rewritten, m.Errors)
		for _, ru := range m.Rules {
			fmt.Fprintf(tw, "  rule %s\t\t-\t%d\t%d\t%d\n", ru.Name, ru.Rejected, ru.Rewritten, ru.Errors)
		}
	}
	return tw.Flush()
}

// oneLine shows text on one line, at most width characters (0 or less:
// all).
func oneLine(text string, width int) string {
	text = strings.NewReplacer("\n", "⏎", "\t", " ", "\r", "").Replace(text)
	if width > 0 && utf8.RuneCountInString(text) > width {
		runes := []rune(text)
		return string(runes[:max(width-1, 0)]) + "…"
	}
	return text
}

// orDash shows an empty cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
