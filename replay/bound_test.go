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
		{"garbage", "yesterday", "", true},
		{"bad seq", "12-x", "", true},
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
