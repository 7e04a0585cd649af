package moderation

import (
	"context"
	"fmt"
	"time"
)

// Message is what a moderator sees of a chat message.
type Message struct {
	// ID is the message's UUID.
	ID string
	// Room, User and ConnID identify where the message goes and who sent
	// it on which connection.
	Room, User, ConnID string
	// Text is the message text, after the rewrites of earlier moderators.
	Text string
	// Time is when the message is moderated: the wall clock in a running
	// server, the recorded time in a dry run. Time-based moderators (rate
	// limits, flood) use it instead of time.Now.
	Time time.Time
	// Metadata is every metadata field of the message (room, user,
	// conn_id, ref, received_at, correlation_id, ...). It is shared with
	// the pipeline: moderators must not modify it.
	Metadata map[string]string
}

// Action is what a moderator decides.
type Action uint8

// The actions.
const (
	// Accept passes the message on unchanged.
	Accept Action = iota
	// Reject refuses the message; the sender gets Decision.Reason.
	Reject
	// Rewrite replaces the text with Decision.Text and passes it on.
	Rewrite
)

// String returns accept, reject or rewrite.
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case Rewrite:
		return "rewrite"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Decision is a moderator's verdict on one message. The zero Decision
// accepts.
type Decision struct {
	// Action is accept, reject or rewrite.
	Action Action
	// Reason explains a rejection to the sender. Default "rejected by
	// moderation".
	Reason string
	// RetryAfter, on a rejection, makes it a rate limit: the sender gets
	// the code rate_limited with retry_after_ms instead of rejected, and
	// the message is not dead-lettered.
	RetryAfter time.Duration
	// Text is the new text of a rewrite.
	Text string
	// Note describes a rewrite; it is stored in the message's metadata
	// (MetaRewriteNotes). Default "rewritten".
	Note string
	// Rule names the rule that decided, for moderators made of rules.
	Rule string

	// unavailable marks the rejection of a moderator that failed closed:
	// the sender gets unavailable (try again), not rejected.
	unavailable bool
}

// Accepted returns a decision that accepts.
func Accepted() Decision { return Decision{} }

// Rejected returns a decision that rejects with reason.
func Rejected(reason string) Decision { return Decision{Action: Reject, Reason: reason} }

// RateLimited returns a decision that rejects with reason and asks the
// sender to wait retryAfter.
func RateLimited(reason string, retryAfter time.Duration) Decision {
	return Decision{Action: Reject, Reason: reason, RetryAfter: retryAfter}
}

// Rewritten returns a decision that replaces the text with text.
func Rewritten(text, note string) Decision {
	return Decision{Action: Rewrite, Text: text, Note: note}
}

// Moderator decides on messages. Implementations are safe for concurrent
// use. An error means the moderator could not decide (a webhook timed out,
// Redis is down); the chain counts it and applies the moderator's on_error
// policy.
type Moderator interface {
	Moderate(ctx context.Context, m *Message) (Decision, error)
}

// Func adapts a function to a Moderator.
type Func func(ctx context.Context, m *Message) (Decision, error)

// Moderate calls f.
func (f Func) Moderate(ctx context.Context, m *Message) (Decision, error) { return f(ctx, m) }

// Runner is a moderator with background work (watching a file, say). Run
// returns when ctx is done.
type Runner interface {
	Run(ctx context.Context) error
}

// Reloader is a moderator that can reread its configuration (on SIGHUP).
// A failed Reload keeps the previous configuration in force.
type Reloader interface {
	Reload() error
}

// Describer is a moderator that can summarise its key settings in one line
// for `chatstream moderation check`.
type Describer interface {
	Describe() string
}

// RuleCounter is a moderator made of named rules that counts the decisions
// of each rule.
type RuleCounter interface {
	RuleStats() map[string]Counts
}

// Metadata keys a rewrite sets on the message; they are stored with it.
const (
	// MetaRewrittenBy lists the moderators that rewrote the text, comma
	// separated, in chain order.
	MetaRewrittenBy = "rewritten_by"
	// MetaRewriteNotes holds their notes, "name: note" joined by "; ".
	MetaRewriteNotes = "rewrite_notes"
)

// ReasonUnavailable is the reason given when a moderator that fails closed
// could not decide.
const ReasonUnavailable = "moderation unavailable"

// UnavailableRetry is the retry hint of a send refused because a moderator
// that fails closed could not decide.
const UnavailableRetry = time.Second

// DefaultReason is the reason of a rejection that gives none.
const DefaultReason = "rejected by moderation"
