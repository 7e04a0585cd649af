package dryrun

// Decision is one message's line of JSON output.
type Decision struct {
	// Type is "message".
	Type string `json:"type"`
	// Seq is the message's stream ID.
	Seq string `json:"seq"`
	// Time is the seq's time, RFC 3339 UTC with milliseconds.
	Time string `json:"time"`
	// Room and User are the message's.
	Room string `json:"room"`
	User string `json:"user"`
	// Decision is accept, reject or rewrite.
	Decision string `json:"decision"`
	// Code is a rejection's error code (pipeline.CodeRejected,
	// pipeline.CodeRateLimited, ...).
	Code string `json:"code,omitempty"`
	// Moderator and Rule name what rejected or rewrote the message.
	Moderator string `json:"moderator,omitempty"`
	Rule      string `json:"rule,omitempty"`
	// Reason is a rejection's reason, as the sender would get it.
	Reason string `json:"reason,omitempty"`
	// RetryAfterMS is how long a rate-limited sender would have to wait,
	// in milliseconds.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// Text is the message's recorded text.
	Text string `json:"text"`
	// Rewritten is a rewrite's new text.
	Rewritten string `json:"rewritten,omitempty"`
	// Notes explain a rewrite.
	Notes string `json:"notes,omitempty"`
}

// Summary is the last line of JSON output: the decisions of a whole run.
type Summary struct {
	// Type is "summary".
	Type string `json:"type"`
	// Rooms are the rooms read.
	Rooms []string `json:"rooms"`
	// Since and Until are the first and last stream IDs read
	// (Config.Since and Config.Until).
	Since string `json:"since"`
	Until string `json:"until"`
	// Messages counts the messages evaluated; Accepted, Rejected and
	// Rewritten their decisions.
	Messages  int64 `json:"messages"`
	Accepted  int64 `json:"accepted"`
	Rejected  int64 `json:"rejected"`
	Rewritten int64 `json:"rewritten"`
	// Undecodable counts the stored entries skipped because they could not
	// be decoded.
	Undecodable int64 `json:"undecodable"`
	// Moderators are the chain's moderators, in chain order.
	Moderators []ModeratorSummary `json:"moderators"`
}

// ModeratorSummary is the decisions of one moderator in a run.
type ModeratorSummary struct {
	// Name and Kind are the moderator's.
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Accepted, Rejected and Rewritten count its decisions.
	Accepted  int64 `json:"accepted"`
	Rejected  int64 `json:"rejected"`
	Rewritten int64 `json:"rewritten"`
	// Errors counts the times it could not decide.
	Errors int64 `json:"errors"`
	// Rules are the decisions of each of its rules, by name, for a
	// moderator made of rules.
	Rules []RuleSummary `json:"rules,omitempty"`
}

// RuleSummary is the decisions of one rule of a moderator in a run.
type RuleSummary struct {
	// Name is the rule's.
	Name string `json:"name"`
	// Rejected and Rewritten count its decisions.
	Rejected  int64 `json:"rejected"`
	Rewritten int64 `json:"rewritten"`
	// Errors counts the times it could not be evaluated.
	Errors int64 `json:"errors"`
}
