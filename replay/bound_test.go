package replay_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// TestParseBound covers every accepted form and the rejected ones.
func TestParseBound(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ms := func(t time.Time) string { return pipeline.Seq{MS: uint64(t.UnixMilli())}.String() }
	cases := []struct {
		name, in, want string
		err            bool
	}{
		{"empty", "", "", false},
		{"rfc3339", "2026-11-26T03:00:00Z", ms(time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)), false},
		{"rfc3339 offset", "2026-11-26T04:00:00+01:00", ms(time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)), false},
		{"duration", "15m", ms(now.Add(-15 * time.Minute)), false},
		{"negative duration", "-1h30m", ms(now.Add(-90 * time.Minute)), false},
		{"seq", "1795716957201-3", "1795716957201-3", false},
		{"millis", "1795716957201", "1795716957201-0", false},
		{"zero is the epoch", "0", "0-0", false},
		{"zeros are the epoch", "000", "0-0", false},
		{"one ms", "1", "1-0", false},
		{"zero duration with unit", "0s", ms(now), false},
		{"negative zero duration with unit", "-0s", ms(now), false},
		{"plus duration", "+15m", ms(now.Add(-15 * time.Minute)), false},
		{"fractional duration", "1.5h", ms(now.Add(-90 * time.Minute)), false},
		{"padded", " 15m ", ms(now.Add(-15 * time.Minute)), false},
		{"garbage", "yesterday", "", true},
		{"bad seq", "12-x", "", true},
		{"negative zero without unit", "-0", "", true},
		{"plus zero without unit", "+0", "", true},
		{"negative millis", "-5", "", true},
		{"millis overflow", "99999999999999999999", "", true},
		{"digits are millis, not a duration", "15", "15-0", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replay.ParseBound(tc.in, now)
			if tc.err {
				if !errors.Is(err, replay.ErrBadBound) {
					t.Fatalf("ParseBound(%q) error = %v, want ErrBadBound", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseBound(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	tm, err := replay.IDTime("1795716957201-3")
	if err != nil || tm.UnixMilli() != 1795716957201 {
		t.Fatalf("IDTime = %v, %v", tm, err)
	}
}

// TestParseRangeZeroBound: a since or until of "0" is the epoch, as every
// tool and the admin API read it, not "no time ago".
func TestParseRangeZeroBound(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, since, until string
		want               replay.Range
		wantErr            bool
	}{
		{name: "since 0 is from the epoch", since: "0", want: replay.Range{Since: "0-0"}},
		{name: "until 0 is the epoch's millisecond", until: "0", want: replay.Range{Until: "0-18446744073709551615"}},
		{name: "since 0 until 1", since: "0", until: "1", want: replay.Range{Since: "0-0", Until: "1-18446744073709551615"}},
		{name: "since 1 until 0 is reversed", since: "1", until: "0", wantErr: true},
		{name: "until -0 has no unit", until: "-0", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replay.ParseRange(tc.since, tc.until, now)
			if tc.wantErr {
				if !errors.Is(err, replay.ErrBadRange) {
					t.Fatalf("ParseRange(%q, %q) = %+v, %v; want ErrBadRange", tc.since, tc.until, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRange(%q, %q) = %+v, %v; want %+v", tc.since, tc.until, got, err, tc.want)
			}
		})
	}
	// The range "since 0" holds a message of now; "until 0" does not.
	id := pipeline.Seq{MS: uint64(now.UnixMilli())}.String()
	if r, _ := replay.ParseRange("0", "", now); !r.Contains(id) {
		t.Fatalf("range since 0 = %+v does not contain %s", r, id)
	}
	if r, _ := replay.ParseRange("", "0", now); r.Contains(id) {
		t.Fatalf("range until 0 = %+v contains %s", r, id)
	}
}
