package moderation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/faillog"
	"github.com/chatstream/chatstream/pipeline"
)

// Entry is one moderator of a chain.
type Entry struct {
	// Name names the moderator in error frames, dead letters, logs and
	// stats. Required, unique within a chain.
	Name string
	// Kind is the moderator's kind, for display. Default "custom".
	Kind string
	// Moderator decides. Required.
	Moderator Moderator
	// OnError is what happens when Moderator returns an error: Reject
	// (fail closed: the sender gets ReasonUnavailable; the default) or
	// Accept (fail open).
	OnError Action
}

// Counts are the decisions of one moderator or rule.
type Counts struct {
	// Accepted, Rejected and Rewritten count the decisions.
	Accepted, Rejected, Rewritten int64
	// Errors counts the times the moderator could not decide; the decision
	// its on_error policy made instead is counted too.
	Errors int64
}

// Stats are the counters of one moderator of a chain.
type Stats struct {
	// Kind is the moderator's kind.
	Kind string
	Counts
	// Rules holds per-rule counts for moderators made of rules.
	Rules map[string]Counts
}

// Chain is an ordered list of moderators. It is safe for concurrent use.
type Chain struct {
	entries []*entry
}

// entry is a moderator of a chain with its counters.
type entry struct {
	Entry
	accepted, rejected, rewritten, errors atomic.Int64
	// fail reports the moderator's failures once while they last.
	fail *faillog.Log
}

// NewChain returns a chain of entries, run in the order given.
func NewChain(log *slog.Logger, entries ...Entry) (*Chain, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Chain{}
	seen := map[string]bool{}
	for _, e := range entries {
		switch {
		case e.Name == "" || e.Moderator == nil:
			return nil, errors.New("moderation: an entry needs a name and a moderator")
		case seen[e.Name]:
			return nil, fmt.Errorf("moderation: moderator name %q is used twice", e.Name)
		case e.OnError != Accept && e.OnError != Reject:
			return nil, fmt.Errorf("moderation: %s: on_error must be accept or reject", e.Name)
		}
		if err := validName(e.Name); err != nil {
			return nil, fmt.Errorf("moderation: %w", err)
		}
		seen[e.Name] = true
		if e.Kind == "" {
			e.Kind = "custom"
		}
		c.entries = append(c.entries, &entry{Entry: e,
			fail: faillog.New(log, fmt.Sprintf("moderator %s (on_error %s)", e.Name, e.OnError), 0)})
	}
	return c, nil
}

// Len returns the number of moderators.
func (c *Chain) Len() int { return len(c.entries) }

// Info describes one moderator of a chain.
type Info struct {
	// Name and Kind are the moderator's.
	Name, Kind string
	// OnError is its policy when it cannot decide.
	OnError Action
	// Summary is the moderator's Describe, or "".
	Summary string
}

// Describe returns the moderators in chain order.
func (c *Chain) Describe() []Info {
	out := make([]Info, len(c.entries))
	for i, e := range c.entries {
		out[i] = Info{Name: e.Name, Kind: e.Kind, OnError: e.OnError}
		if d, ok := e.Moderator.(Describer); ok {
			out[i].Summary = d.Describe()
		}
	}
	return out
}

// Moderators returns the chain as pipeline moderators (Watermill
// middleware), in order, for pipeline.Config.Moderators.
func (c *Chain) Moderators() []pipeline.Moderator {
	out := make([]pipeline.Moderator, len(c.entries))
	for i, e := range c.entries {
		out[i] = pipeline.Moderator{Name: e.Name, Middleware: e.middleware}
	}
	return out
}

// Stats returns every moderator's counters by name.
func (c *Chain) Stats() map[string]Stats {
	out := make(map[string]Stats, len(c.entries))
	for _, e := range c.entries {
		s := Stats{Kind: e.Kind, Counts: Counts{
			Accepted: e.accepted.Load(), Rejected: e.rejected.Load(),
			Rewritten: e.rewritten.Load(), Errors: e.errors.Load(),
		}}
		if rc, ok := e.Moderator.(RuleCounter); ok {
			s.Rules = maps.Clone(rc.RuleStats())
		}
		out[e.Name] = s
	}
	return out
}

// Run runs the background work of every moderator that has some (see
// Runner) until ctx is done.
func (c *Chain) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.entries))
	for i, e := range c.entries {
		if r, ok := e.Moderator.(Runner); ok {
			wg.Go(func() {
				if err := r.Run(ctx); err != nil {
					errs[i] = fmt.Errorf("moderation: %s: %w", e.Name, err)
				}
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Reload reloads every moderator that can (see Reloader). A moderator whose
// reload fails keeps its previous configuration; the errors are joined.
func (c *Chain) Reload() error {
	var errs []error
	for _, e := range c.entries {
		if r, ok := e.Moderator.(Reloader); ok {
			if err := r.Reload(); err != nil {
				errs = append(errs, fmt.Errorf("moderation: %s: %w", e.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Result is what the whole chain decides about one message.
type Result struct {
	// Action is Reject when a moderator rejected, else Rewrite when one
	// or more rewrote, else Accept.
	Action Action
	// Moderator names the moderator that rejected, or those that rewrote
	// (comma separated).
	Moderator string
	// Rule names the deciding rule(s), when the moderator has rules.
	Rule string
	// Reason is the rejection's reason.
	Reason string
	// Code is pipeline.CodeRejected, pipeline.CodeRateLimited, or
	// pipeline.CodeUnavailable (a moderator that fails closed could not
	// decide) on a rejection.
	Code string
	// RetryAfter is set on a rate limit and on unavailable.
	RetryAfter time.Duration
	// Text is the text after every rewrite.
	Text string
	// Notes are the rewrite notes, "name: note" joined by "; ".
	Notes string
}

// Evaluate runs m through the whole chain without the pipeline, as the
// dry run does, and returns the outcome. Counters are updated like for live
// traffic.
func (c *Chain) Evaluate(ctx context.Context, m Message) Result {
	var res Result
	var by, rules []string
	for _, e := range c.entries {
		d := e.decide(ctx, &m)
		switch d.Action {
		case Reject:
			perr := e.refusal(d)
			return Result{
				Action: Reject, Moderator: e.Name, Rule: d.Rule, Reason: perr.Reason,
				Code: perr.Code, RetryAfter: perr.RetryAfter, Text: m.Text,
			}
		case Rewrite:
			m.Text = d.Text
			by = append(by, e.Name)
			if d.Rule != "" {
				rules = append(rules, d.Rule)
			}
			res.Notes = appendNote(res.Notes, e.Name, d.Note)
		}
	}
	res.Text = m.Text
	if len(by) > 0 {
		res.Action, res.Moderator, res.Rule = Rewrite, strings.Join(by, ","), strings.Join(rules, ",")
	}
	return res
}

// middleware is the entry as Watermill middleware.
func (e *entry) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		md := msg.Metadata
		m := Message{
			ID: msg.UUID, Room: md.Get(pipeline.MetaRoom), User: md.Get(pipeline.MetaUser),
			ConnID: md.Get(pipeline.MetaConnID), Text: string(msg.Payload), Time: time.Now(), Metadata: md,
		}
		d := e.decide(msg.Context(), &m)
		switch d.Action {
		case Reject:
			return nil, e.refusal(d)
		case Rewrite:
			msg.Payload = []byte(d.Text)
			if by := md.Get(MetaRewrittenBy); by != "" {
				md.Set(MetaRewrittenBy, by+","+e.Name)
			} else {
				md.Set(MetaRewrittenBy, e.Name)
			}
			md.Set(MetaRewriteNotes, appendNote(md.Get(MetaRewriteNotes), e.Name, d.Note))
		}
		return h(msg)
	}
}

func appendNote(notes, name, note string) string {
	if note == "" {
		note = "rewritten"
	}
	if notes != "" {
		notes += "; "
	}
	return notes + name + ": " + note
}

// refusal turns a rejection into the pipeline's error.
func (e *entry) refusal(d Decision) *pipeline.Error {
	reason := d.Reason
	if reason == "" {
		reason = DefaultReason
	}
	perr := &pipeline.Error{Code: pipeline.CodeRejected, Reason: reason, Moderator: e.Name}
	switch {
	case d.unavailable:
		// Not a verdict on the message: it may pass once the moderator
		// works again, and it is not dead-lettered.
		perr.Code, perr.RetryAfter = pipeline.CodeUnavailable, UnavailableRetry
	case d.RetryAfter > 0:
		perr.Code, perr.RetryAfter = pipeline.CodeRateLimited, d.RetryAfter
	}
	return perr
}

// decide asks the moderator, checks its answer, applies the on_error policy
// and counts the decision.
func (e *entry) decide(ctx context.Context, m *Message) Decision {
	d, err := e.Moderator.Moderate(ctx, m)
	if err == nil {
		err = check(d, m.Text)
	}
	if err != nil {
		e.errors.Add(1)
		e.fail.Fail("", err)
		d = Decision{}
		if e.OnError == Reject {
			d = Decision{Action: Reject, Reason: ReasonUnavailable, unavailable: true}
		}
	} else if e.fail.Active() {
		e.fail.OK("")
	}
	switch d.Action {
	case Accept:
		e.accepted.Add(1)
	case Reject:
		e.rejected.Add(1)
	case Rewrite:
		e.rewritten.Add(1)
	}
	return d
}

// ErrBadDecision reports a decision the chain cannot apply.
var ErrBadDecision = errors.New("bad decision")

// check reports a decision that cannot be applied: an unknown action, or a
// rewrite to text the pipeline would have refused (empty, control
// characters) or that is longer than both the original and
// pipeline.DefaultMaxTextBytes.
func check(d Decision, orig string) error {
	switch d.Action {
	case Accept, Reject:
		return nil
	case Rewrite:
		if err := pipeline.ValidateText(d.Text); err != nil {
			return fmt.Errorf("%w: rewrite: %w", ErrBadDecision, err)
		}
		if len(d.Text) > max(len(orig), pipeline.DefaultMaxTextBytes) {
			return fmt.Errorf("%w: rewrite makes the text %d bytes long", ErrBadDecision, len(d.Text))
		}
		return nil
	}
	return fmt.Errorf("%w: %v", ErrBadDecision, d.Action)
}
