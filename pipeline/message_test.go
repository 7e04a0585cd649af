package pipeline_test

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
)

// wantValid checks the result of a Validate function: nil when ok, else an
// *pipeline.Error with CodeInvalid and a reason.
func wantValid(t *testing.T, fn string, input string, err error, ok bool) {
	t.Helper()
	if ok {
		if err != nil {
			t.Fatalf("%s(%q) = %v, want nil", fn, input, err)
		}
		return
	}
	var perr *pipeline.Error
	if !errors.As(err, &perr) {
		t.Fatalf("%s(%q) = %v, want a *pipeline.Error", fn, input, err)
	}
	if perr.Code != pipeline.CodeInvalid || perr.Reason == "" {
		t.Fatalf("%s(%q) = code %q reason %q, want %q with a reason", fn, input, perr.Code, perr.Reason, pipeline.CodeInvalid)
	}
}

// TestValidateRoom proves which room names are accepted: 1–64 ASCII letters,
// digits and "_ - . :", nothing else.
func TestValidateRoom(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, room string
		ok         bool
	}{
		{"simple", "lobby", true},
		{"one character", "a", true},
		{"every allowed punctuation", "a_b-c.d:e", true},
		{"mixed case and digits", "Room42", true},
		{"64 characters", strings.Repeat("x", pipeline.MaxRoomLen), true},
		{"empty", "", false},
		{"65 characters", strings.Repeat("x", pipeline.MaxRoomLen+1), false},
		{"space", "no spaces", false},
		{"leading space", " lobby", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"at sign", "a@b", false},
		{"accented letter", "café", false},
		{"cyrillic", "комната", false},
		{"emoji", "🎉", false},
		{"NUL", "a\x00b", false},
		{"newline", "a\nb", false},
		{"invalid UTF-8", "a\xffb", false},
		{"fullwidth letter", "ａ", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantValid(t, "ValidateRoom", tc.room, pipeline.ValidateRoom(tc.room), tc.ok)
		})
	}
}

// TestValidateUser proves which user names are accepted: the gateway's
// name rules (1–32 characters people can see and tell apart, without
// leading or trailing space), in normal form NFKC, whoever publishes.
func TestValidateUser(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, user string
		ok         bool
	}{
		{"simple", "alice", true},
		{"inner space", "alice smith", true},
		{"unicode letters", "Zoë", true},
		{"greek", "Ωμέγα", true},
		{"emoji", "🦊", true},
		{"32 characters", strings.Repeat("a", pipeline.MaxUserLen), true},
		{"32 multibyte characters", strings.Repeat("é", pipeline.MaxUserLen), true},
		{"empty", "", false},
		{"33 characters", strings.Repeat("a", pipeline.MaxUserLen+1), false},
		{"33 multibyte characters", strings.Repeat("é", pipeline.MaxUserLen+1), false},
		{"leading space", " alice", false},
		{"trailing space", "alice ", false},
		{"only spaces", "   ", false},
		{"tab", "al\tice", false},
		{"newline", "al\nice", false},
		{"NUL", "al\x00ice", false},
		{"DEL", "al\x7fice", false},
		{"zero-width space", "al\u200bice", false},
		{"right-to-left override", "al\u202eice", false},
		{"no-break space", "al\u00a0ice", false},
		{"invalid UTF-8", "al\xffice", false},
		{"latin and cyrillic", "\u0430lice", false},
		{"latin and greek", "Zoë Ω", false},
		{"fullwidth, not NFKC", "ａｌｉｃｅ", false},
		{"decomposed, not NFKC", "Zoe\u0308", false},
		{"hangul filler", "al\u3164ice", false},
		{"braille blank", "\u2800", false},
		{"variation selector", "alice\ufe0f", false},
		{"word joiner", "al\u2060ice", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantValid(t, "ValidateUser", tc.user, pipeline.ValidateUser(tc.user), tc.ok)
		})
	}
}

// TestValidateRef proves which client refs are accepted: empty, or at most
// 64 printable characters.
func TestValidateRef(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ref string
		ok        bool
	}{
		{"empty", "", true},
		{"simple", "c-1", true},
		{"with space", "my ref 1", true},
		{"64 characters", strings.Repeat("r", pipeline.MaxRefLen), true},
		{"64 multibyte characters", strings.Repeat("ж", pipeline.MaxRefLen), true},
		{"65 characters", strings.Repeat("r", pipeline.MaxRefLen+1), false},
		{"65 multibyte characters", strings.Repeat("ж", pipeline.MaxRefLen+1), false},
		{"BEL", "a\x07", false},
		{"newline", "a\nb", false},
		{"tab", "a\tb", false},
		{"DEL", "\x7f", false},
		{"C1 control", "\u0085", false},
		{"zero-width space", "\u200b", false},
		{"invalid UTF-8", "\xff", false},
		{"truncated UTF-8", "\xe2\x82", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantValid(t, "ValidateRef", tc.ref, pipeline.ValidateRef(tc.ref), tc.ok)
		})
	}
}

// TestValidateText proves which texts are accepted: not blank, valid UTF-8,
// no control characters except newline and tab, no line or paragraph
// separators.
func TestValidateText(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, text string
		ok         bool
	}{
		{"simple", "hello", true},
		{"newline", "line 1\nline 2", true},
		{"tab", "a\tb", true},
		{"unicode and emoji", "héllo wörld 🎉 你好", true},
		{"leading and trailing space", "  hi  ", true},
		{"zero-width joiner in emoji", "👩\u200d💻", true},
		{"empty", "", false},
		{"spaces only", "   ", false},
		{"newlines and tabs only", "\n\t \n", false},
		{"unicode space only", "\u3000\u00a0", false},
		{"NUL", "a\x00b", false},
		{"BEL", "a\x07b", false},
		{"carriage return", "a\r\nb", false},
		{"escape", "\x1b[31mred", false},
		{"DEL", "a\x7fb", false},
		{"C1 control", "a\u0085b", false},
		{"line separator U+2028", "a\u2028b", false},
		{"paragraph separator U+2029", "a\u2029b", false},
		{"invalid UTF-8", "a\xffb", false},
		{"UTF-8 encoded surrogate", "a\xed\xa0\x80b", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantValid(t, "ValidateText", tc.text, pipeline.ValidateText(tc.text), tc.ok)
		})
	}
}

// TestParseSeq proves that ParseSeq accepts exactly "<ms>-<n>" with two
// unsigned 64-bit decimals, refuses everything else with ErrBadSeq, and that
// String is its inverse.
func TestParseSeq(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want pipeline.Seq
		ok   bool
	}{
		{"123-4", pipeline.Seq{MS: 123, N: 4}, true},
		{"0-0", pipeline.Seq{}, true},
		{"18446744073709551615-18446744073709551615", pipeline.Seq{MS: math.MaxUint64, N: math.MaxUint64}, true},
		{"", pipeline.Seq{}, false},
		{"123", pipeline.Seq{}, false},
		{"123-", pipeline.Seq{}, false},
		{"-4", pipeline.Seq{}, false},
		{"-", pipeline.Seq{}, false},
		{"1-2-3", pipeline.Seq{}, false},
		{"a-1", pipeline.Seq{}, false},
		{"1-b", pipeline.Seq{}, false},
		{"+1-2", pipeline.Seq{}, false},
		{"-1-2", pipeline.Seq{}, false},
		{" 1-2", pipeline.Seq{}, false},
		{"1-2 ", pipeline.Seq{}, false},
		{"1.5-2", pipeline.Seq{}, false},
		{"0x1-2", pipeline.Seq{}, false},
		{"18446744073709551616-0", pipeline.Seq{}, false},
		{"0-18446744073709551616", pipeline.Seq{}, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := pipeline.ParseSeq(tc.in)
			if !tc.ok {
				if !errors.Is(err, pipeline.ErrBadSeq) {
					t.Fatalf("ParseSeq(%q) = %v, %v; want ErrBadSeq", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSeq(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if s := got.String(); s != tc.in {
				t.Fatalf("ParseSeq(%q).String() = %q", tc.in, s)
			}
		})
	}
}

// TestSeqLessAndNext proves that Less orders by ms then n, numerically, and
// that Next is the smallest seq after its receiver, carrying into ms.
func TestSeqLessAndNext(t *testing.T) {
	t.Parallel()
	less := []struct{ a, b pipeline.Seq }{
		{pipeline.Seq{MS: 1, N: 0}, pipeline.Seq{MS: 1, N: 1}},
		{pipeline.Seq{MS: 1, N: 9}, pipeline.Seq{MS: 1, N: 10}},
		{pipeline.Seq{MS: 1, N: math.MaxUint64}, pipeline.Seq{MS: 2, N: 0}},
		{pipeline.Seq{MS: 9, N: 5}, pipeline.Seq{MS: 10, N: 0}},
	}
	for _, tc := range less {
		if !tc.a.Less(tc.b) || tc.b.Less(tc.a) {
			t.Errorf("%v.Less(%v), %v.Less(%v) = %v, %v; want true, false", tc.a, tc.b, tc.b, tc.a, tc.a.Less(tc.b), tc.b.Less(tc.a))
		}
	}
	s := pipeline.Seq{MS: 3, N: 3}
	if s.Less(s) {
		t.Errorf("%v.Less(itself) = true", s)
	}
	next := []struct{ in, want pipeline.Seq }{
		{pipeline.Seq{MS: 5, N: 0}, pipeline.Seq{MS: 5, N: 1}},
		{pipeline.Seq{MS: 5, N: 41}, pipeline.Seq{MS: 5, N: 42}},
		{pipeline.Seq{MS: 5, N: math.MaxUint64}, pipeline.Seq{MS: 6, N: 0}},
	}
	for _, tc := range next {
		got := tc.in.Next()
		if got != tc.want {
			t.Errorf("%v.Next() = %v, want %v", tc.in, got, tc.want)
		}
		if !tc.in.Less(got) {
			t.Errorf("%v.Next() = %v is not after it", tc.in, got)
		}
	}
}

// TestCompareSeq proves that CompareSeq compares numerically (not as
// strings), is antisymmetric, and sorts malformed seqs first.
func TestCompareSeq(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"1-9", "1-10", -1},
		{"9-5", "10-0", -1},
		{"2-0", "1-99", 1},
		{"bad", "0-0", -1},
		{"", "0-0", -1},
		{"0-0", "nope", 1},
		{"bad", "worse", 0},
	}
	for _, tc := range cases {
		if got := pipeline.CompareSeq(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareSeq(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := pipeline.CompareSeq(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareSeq(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

// TestPartitionOf proves that PartitionOf is in range, deterministic, maps
// everything to 0 for n <= 1, and spreads 1000 room names roughly evenly
// over 16 partitions.
func TestPartitionOf(t *testing.T) {
	t.Parallel()
	const n, rooms = 16, 1000
	for _, k := range []int{-1, 0, 1} {
		if p := pipeline.PartitionOf("lobby", k); p != 0 {
			t.Errorf("PartitionOf(lobby, %d) = %d, want 0", k, p)
		}
	}
	counts := make([]int, n)
	for i := range rooms {
		room := fmt.Sprintf("room-%d", i)
		p := pipeline.PartitionOf(room, n)
		if p < 0 || p >= n {
			t.Fatalf("PartitionOf(%q, %d) = %d, out of range", room, n, p)
		}
		for range 3 {
			if again := pipeline.PartitionOf(room, n); again != p {
				t.Fatalf("PartitionOf(%q, %d) = %d, then %d", room, n, p, again)
			}
		}
		counts[p]++
	}
	// 62.5 are expected per partition; a fair hash stays well inside
	// [lo, hi] (more than 6 standard deviations away on either side).
	const lo, hi = 25, 125
	for p, c := range counts {
		if c < lo || c > hi {
			t.Errorf("partition %d got %d of %d rooms, want about %d: %v", p, c, rooms, rooms/n, counts)
		}
	}
	for _, k := range []int{2, 3, 7, 100} {
		for i := range 200 {
			if p := pipeline.PartitionOf(fmt.Sprint("r", i), k); p < 0 || p >= k {
				t.Fatalf("PartitionOf(r%d, %d) = %d, out of range", i, k, p)
			}
		}
	}
}

// TestFromWatermill proves that a stored Watermill message decodes into a
// Message with every field, its timestamp in UTC, and that a missing room,
// user or seq gives ErrIncomplete and a bad received_at an error.
func TestFromWatermill(t *testing.T) {
	t.Parallel()
	full := func() *message.Message {
		m := message.NewMessage("id-1", []byte("hello\nworld"))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		m.Metadata.Set(pipeline.MetaSeq, "100-2")
		m.Metadata.Set(pipeline.MetaRef, "c-1")
		m.Metadata.Set(pipeline.MetaReceivedAt, "2024-05-06T07:08:09.123456789+02:00")
		return m
	}
	got, err := pipeline.FromWatermill(full())
	if err != nil {
		t.Fatal(err)
	}
	want := pipeline.Message{
		ID: "id-1", Room: "lobby", Seq: "100-2", User: "alice", Text: "hello\nworld", Ref: "c-1",
		TS: time.Date(2024, 5, 6, 5, 8, 9, 123456789, time.UTC),
	}
	if got != want {
		t.Fatalf("FromWatermill = %+v, want %+v", got, want)
	}
	if got.TS.Location() != time.UTC {
		t.Errorf("TS location = %v, want UTC", got.TS.Location())
	}

	noTS := full()
	noTS.Metadata.Set(pipeline.MetaReceivedAt, "")
	if m, err := pipeline.FromWatermill(noTS); err != nil || !m.TS.IsZero() {
		t.Errorf("without received_at: TS %v, err %v; want zero time and no error", m.TS, err)
	}

	for _, key := range []string{pipeline.MetaRoom, pipeline.MetaUser, pipeline.MetaSeq} {
		t.Run("missing "+key, func(t *testing.T) {
			m := full()
			delete(m.Metadata, key)
			got, err := pipeline.FromWatermill(m)
			if !errors.Is(err, pipeline.ErrIncomplete) {
				t.Fatalf("FromWatermill without %s = %+v, %v; want ErrIncomplete", key, got, err)
			}
			if got != (pipeline.Message{}) {
				t.Fatalf("FromWatermill without %s returned %+v with its error", key, got)
			}
		})
	}
	for _, ts := range []string{"yesterday", "2024-05-06", "2024-13-01T00:00:00Z", "1715000000"} {
		t.Run("received_at "+ts, func(t *testing.T) {
			m := full()
			m.Metadata.Set(pipeline.MetaReceivedAt, ts)
			_, err := pipeline.FromWatermill(m)
			var perr *time.ParseError
			if !errors.As(err, &perr) || errors.Is(err, pipeline.ErrIncomplete) {
				t.Fatalf("FromWatermill with received_at %q = %v, want a time parse error", ts, err)
			}
			if !strings.Contains(err.Error(), "id-1") {
				t.Errorf("error %q does not name the message", err)
			}
		})
	}
}

// TestNewEpoch proves that epochs have the documented form (milliseconds
// in base 36, a dot, 48 random bits in 12 hex digits), differ from call to
// call, and cost one allocation: the append script takes a fresh one per
// call.
func TestNewEpoch(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-z]{8,}\.[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 1000 {
		e := pipeline.NewEpoch()
		if !form.MatchString(e) {
			t.Fatalf("epoch %q does not have the form ms36.hex12", e)
		}
		if seen[e] {
			t.Fatalf("epoch %q repeated", e)
		}
		seen[e] = true
	}
	if n := testing.AllocsPerRun(100, func() { _ = pipeline.NewEpoch() }); n > 1 {
		t.Errorf("NewEpoch allocates %v times, want 1", n)
	}
}
