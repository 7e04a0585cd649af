package names

import (
	"errors"
	"strings"
	"testing"
)

// FuzzCheck proves that Check, with its shortcut for ASCII, accepts exactly
// the names that Normalize accepts and leaves unchanged, and that every
// refusal wraps ErrBad.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"", " ", "alice", "alice smith", " alice", "alice ", strings.Repeat("a", 32), strings.Repeat("a", 33),
		"al\tice", "al\x7fice", "Zoë", "Zoe\u0308", "ａｌｉｃｅ", "\u0430lice", "Zoë Ω", "al\u3164ice", "🦊", "a\xffb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Check("user name", name, 32)
		n, nerr := Normalize("user name", name, 32)
		if want := nerr == nil && n == name; (err == nil) != want {
			t.Fatalf("Check(%q) = %v, but Normalize gives %q, %v", name, err, n, nerr)
		}
		if err != nil && !errors.Is(err, ErrBad) {
			t.Fatalf("Check(%q) = %v, not wrapping ErrBad", name, err)
		}
	})
}
