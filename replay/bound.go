package replay

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// ErrBadBound reports a bound that is none of the forms ParseBound accepts.
var ErrBadBound = errors.New("not an RFC 3339 time, a duration ago with a unit (15m, -15m), a seq (1700000000000-0) or milliseconds since the epoch")

// ParseBound converts s, one end of a time range as the tools accept it, to
// a stream ID, relative to now:
//
//	2026-11-26T03:00:00Z   an RFC 3339 time (its millisecond, seq 0)
//	15m, -15m, 1h30m       that long before now (the sign is optional)
//	1795716957201-3, 1795716957201  a stream ID / seq, or milliseconds
//	                       since the epoch
//
// A bound of digits only is milliseconds since the epoch, so "0" is the
// epoch, not now; a duration must carry a unit ("0s" is now, "-0" fails).
// An empty s returns "". Any other s fails with ErrBadBound.
func ParseBound(s string, now time.Time) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return idFromTime(t), nil
	}
	if seq, err := pipeline.ParseSeq(s); err == nil {
		return seq.String(), nil
	}
	// Digits only (ParseUint takes no sign): milliseconds, before
	// time.ParseDuration, which reads a unitless "0" as no time ago.
	if ms, err := strconv.ParseUint(s, 10, 64); err == nil {
		return pipeline.Seq{MS: ms}.String(), nil
	}
	if d := strings.TrimPrefix(s, "-"); hasUnit(d) {
		if d, err := time.ParseDuration(d); err == nil && d >= 0 {
			return idFromTime(now.Add(-d)), nil
		}
	}
	return "", fmt.Errorf("%q: %w", s, ErrBadBound)
}

// hasUnit reports whether the duration s ends with a unit (ns, ms, h, ...),
// as every duration but time.ParseDuration's unitless "0", "+0" does.
func hasUnit(s string) bool {
	return s != "" && (s[len(s)-1] < '0' || s[len(s)-1] > '9')
}

// idFromTime returns the first stream ID of t's millisecond (of the epoch
// for a time before it).
func idFromTime(t time.Time) string {
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return pipeline.Seq{MS: uint64(ms)}.String()
}

// IDTime returns the wall-clock time (UTC) of a stream ID. It fails with
// pipeline.ParseSeq's error for a malformed ID.
func IDTime(id string) (time.Time, error) {
	seq, err := pipeline.ParseSeq(id)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(int64(seq.MS)).UTC(), nil
}
