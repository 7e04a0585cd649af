package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/auth"
)

func TestNormalizeUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     string // normalised name; "" = refused
		reason   string // part of the refusal
	}{
		{"plain", "alice", "alice", ""},
		{"inner space", "alice smith", "alice smith", ""},
		{"full width", "ａｌｉｃｅ", "alice", ""},
		{"ligature", "ﬁona", "fiona", ""},
		{"accents composed", "Jose\u0301", "José", ""},
		{"cyrillic only", "Дмитрий", "Дмитрий", ""},
		{"japanese", "さくら", "さくら", ""},
		{"emoji", "bob 🚀", "bob 🚀", ""},
		{"hangul filler", "\u3164", "", "U+3164 HANGUL FILLER"},
		{"hangul filler inside", "al\u3164ice", "", "HANGUL FILLER"},
		{"halfwidth hangul filler", "\uFFA0", "", "HALFWIDTH HANGUL FILLER"},
		{"braille blank", "\u2800", "", "U+2800 BRAILLE PATTERN BLANK"},
		{"right-to-left override", "\u202Eecila", "", "bidirectional"},
		{"right-to-left isolate", "a\u2067b", "", "bidirectional"},
		{"left-to-right mark", "alice\u200E", "", "bidirectional"},
		{"zero-width space", "ali\u200Bce", "", "zero-width"},
		{"zero-width joiner", "ali\u200Dce", "", "zero-width"},
		{"byte order mark", "\uFEFFalice", "", "zero-width"},
		{"soft hyphen", "ali\u00ADce", "", "format"},
		{"variation selector", "alice\uFE0F", "", "default-ignorable"},
		{"combining grapheme joiner", "ali\u034Fce", "", "default-ignorable"},
		{"no-break space", "alice\u00A0smith", "", "white space"},
		{"ideographic space", "\u3000", "", "white space"},
		{"tab", "a\tb", "", "control"},
		{"mixed latin cyrillic", "\u0430lice", "", "Latin and Cyrillic"},
		{"mixed latin greek", "b\u03BFb", "", "Latin and Greek"},
		{"empty", "", "", "empty"},
		{"spaces", "   ", "", "empty"},
		{"leading space", " alice", "", "leading or trailing"},
		{"too long", strings.Repeat("a", 33), "", "longer than 32"},
		{"long after nfkc", strings.Repeat("\u3392", 11), "", "longer than 32"}, // ㎒ is 3 characters in NFKC
		{"private use", "\uE000", "", "private-use"},
		{"invalid utf8", "a\xffb", "", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.NormalizeUser(tt.in)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, auth.ErrBadName) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("got %q, %v; want ErrBadName saying %q", got, err, tt.reason)
			}
		})
	}
}
