package replay

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// Range selects entries by ID, both ends inclusive; an empty end is open.
type Range struct {
	// Since is the first entry ID selected ("" from the oldest).
	Since string
	// Until is the last entry ID selected ("" to the newest).
	Until string
}

// ParseRange parses since and until in any form ParseBound accepts
// (RFC 3339 time, duration ago such as -15m, seq or milliseconds), relative
// to now. Both ends are inclusive; an until given as a time or as
// milliseconds includes that whole millisecond. It fails with ErrBadRange.
func ParseRange(since, until string, now time.Time) (Range, error) {
	var r Range
	var err error
	if r.Since, err = ParseBound(since, now); err != nil {
		return Range{}, fmt.Errorf("%w: since %w", ErrBadRange, err)
	}
	if r.Until, err = ParseBound(until, now); err != nil {
		return Range{}, fmt.Errorf("%w: until %w", ErrBadRange, err)
	}
	if r.Until != "" {
		if _, err := pipeline.ParseSeq(strings.TrimSpace(until)); err != nil {
			// A time, not a seq: take every entry of its millisecond.
			s, _ := pipeline.ParseSeq(r.Until) // ParseBound returns a well-formed seq
			r.Until = pipeline.Seq{MS: s.MS, N: math.MaxUint64}.String()
		}
	}
	if r.Since != "" && r.Until != "" && pipeline.CompareSeq(r.Since, r.Until) > 0 {
		return Range{}, fmt.Errorf("%w: since %s is after until %s", ErrBadRange, r.Since, r.Until)
	}
	return r, nil
}

// start is the XRANGE start of r.
func (r Range) start() string {
	if r.Since == "" {
		return "-"
	}
	return r.Since
}

// end is the XRANGE end of r.
func (r Range) end() string {
	if r.Until == "" {
		return "+"
	}
	return r.Until
}

// Contains reports whether id is inside r.
func (r Range) Contains(id string) bool {
	if r.Since != "" && pipeline.CompareSeq(id, r.Since) < 0 {
		return false
	}
	return r.Until == "" || pipeline.CompareSeq(id, r.Until) <= 0
}

// capEnd returns the earlier of an XRANGE end and the stream ID last.
func capEnd(end, last string) string {
	if end == "+" || pipeline.CompareSeq(last, end) < 0 {
		return last
	}
	return end
}

// Filter selects entries by their fields; a zero field selects everything.
type Filter struct {
	// User selects the messages of one user (exact match).
	User string
	// Grep selects messages whose text matches.
	Grep *regexp.Regexp
	// Moderator selects dead letters rejected by one moderator.
	Moderator string
}

// Match reports whether e passes every condition of f.
func (f Filter) Match(e Entry) bool {
	switch {
	case f.User != "" && e.User != f.User:
		return false
	case f.Moderator != "" && e.Moderator() != f.Moderator:
		return false
	case f.Grep != nil && !f.Grep.MatchString(e.Text):
		return false
	}
	return true
}
