// Package names holds the rules for the names people see (user and display
// names): a name must be one that people can see and tell apart from
// another. The gateway applies them when a client says who it is (auth),
// and the pipeline to every message, whoever published it.
package names

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/runenames"
)

// ErrBad reports a name the rules refuse; the error's text says why.
var ErrBad = errors.New("bad name")

// Check reports whether name passes the rules as it is: Normalize would
// accept it and leave it unchanged. A name of printable ASCII is checked
// without normalising.
func Check(kind, name string, max int) error {
	if printableASCII(name) {
		switch {
		case strings.TrimSpace(name) == "":
			return fmt.Errorf("%w: %s is empty", ErrBad, kind)
		case len(name) > max:
			return fmt.Errorf("%w: %s is longer than %d characters", ErrBad, kind, max)
		case name[0] == ' ' || name[len(name)-1] == ' ':
			return fmt.Errorf("%w: %s has leading or trailing space", ErrBad, kind)
		}
		return nil
	}
	n, err := Normalize(kind, name, max)
	if err != nil {
		return err
	}
	if n != name {
		return fmt.Errorf("%w: %s is not in Unicode normal form NFKC (it would be %q)", ErrBad, kind, n)
	}
	return nil
}

// printableASCII reports whether s holds only printable ASCII characters
// and spaces (it may be empty).
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Normalize returns name in Unicode normalisation form NFKC (so that
// full-width "ａｌｉｃｅ" is "alice") after checking that it is a name
// people can see and tell apart: valid UTF-8, not empty, at most max
// characters, no leading or trailing space, and none of these characters:
//
//   - control and format characters (Cc, Cf), among them the zero-width
//     space, joiner and non-joiner, the soft hyphen and the byte order mark;
//   - bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F,
//     U+061C), which reorder what follows;
//   - default-ignorable code points (variation selectors, U+3164 HANGUL
//     FILLER, U+115F, U+1160, U+FFA0, ...), which render as nothing;
//   - blanks that look like nothing: U+2800 BRAILLE PATTERN BLANK, and any
//     white space other than the ASCII space;
//   - unassigned, private-use and surrogate code points.
//
// A name whose letters mix Latin, Greek and Cyrillic ("аlice" with a
// Cyrillic а) is refused too, since it can pass for another name. The
// error wraps ErrBad and names the character (kind is "user name" or
// "display name").
func Normalize(kind, name string, max int) (string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrBad, kind, fmt.Sprintf(format, args...))
	}
	if !utf8.ValidString(name) {
		return "", bad("is not valid UTF-8")
	}
	// Checked before normalising too: NFKC would turn some of them into
	// plain characters that hide the trick.
	for _, r := range name {
		if why := invisible(r); why != "" {
			return "", bad("contains %s, %s", describeRune(r), why)
		}
	}
	n := norm.NFKC.String(name)
	switch {
	case strings.TrimSpace(n) == "":
		return "", bad("is empty")
	case utf8.RuneCountInString(n) > max:
		return "", bad("is longer than %d characters", max)
	case strings.TrimSpace(n) != n:
		return "", bad("has leading or trailing space")
	}
	for _, r := range n {
		if why := invisible(r); why != "" {
			return "", bad("contains %s, %s", describeRune(r), why)
		}
		if !unicode.IsPrint(r) {
			return "", bad("contains %s, which is not printable", describeRune(r))
		}
	}
	if a, b := mixedScripts(n); a != "" {
		return "", bad("mixes %s and %s letters, which can pass for another name", a, b)
	}
	return n, nil
}

// blanks are printable characters that render as nothing.
var blanks = map[rune]bool{
	0x2800:  true,                                              // BRAILLE PATTERN BLANK
	0x3164:  true,                                              // HANGUL FILLER
	0x115F:  true,                                              // HANGUL CHOSEONG FILLER
	0x1160:  true,                                              // HANGUL JUNGSEONG FILLER
	0xFFA0:  true,                                              // HALFWIDTH HANGUL FILLER
	0x2062:  true,                                              // INVISIBLE TIMES
	0x2063:  true,                                              // INVISIBLE SEPARATOR
	0x2064:  true,                                              // INVISIBLE PLUS
	0x1D159: true,                                              // MUSICAL SYMBOL NULL NOTEHEAD
	0x1D173: true, 0x1D174: true, 0x1D175: true, 0x1D176: true, // MUSICAL SYMBOL BEGIN/END BEAM, TIE
	0x1D177: true, 0x1D178: true, 0x1D179: true, 0x1D17A: true, // MUSICAL SYMBOL BEGIN/END SLUR, PHRASE
}

// invisible says why r may not appear in a name, or "" when it may.
func invisible(r rune) string {
	switch {
	case unicode.Is(unicode.Bidi_Control, r):
		return "a bidirectional control character"
	case unicode.Is(unicode.Join_Control, r), r == 0x200B, r == 0xFEFF:
		return "a zero-width character"
	case unicode.Is(unicode.Cc, r):
		return "a control character"
	case blanks[r]:
		return "an invisible character"
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r), unicode.Is(unicode.Variation_Selector, r):
		return "a default-ignorable (invisible) character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character"
	case r != ' ' && unicode.Is(unicode.White_Space, r):
		return "white space other than the space"
	case unicode.Is(unicode.Co, r), unicode.Is(unicode.Cs, r):
		return "a private-use or surrogate code point"
	case r == utf8.RuneError:
		return "the replacement character"
	}
	return ""
}

// describeRune names r for an error message: U+3164 HANGUL FILLER.
func describeRune(r rune) string {
	if n := runenames.Name(r); n != "" && !strings.HasPrefix(n, "<") {
		return fmt.Sprintf("U+%04X %s", r, n)
	}
	return fmt.Sprintf("U+%04X", r)
}

// confusableScripts are the scripts whose letters pass for one another.
var confusableScripts = []struct {
	name  string
	table *unicode.RangeTable
}{
	{"Latin", unicode.Latin},
	{"Greek", unicode.Greek},
	{"Cyrillic", unicode.Cyrillic},
}

// mixedScripts returns two of the confusable scripts whose letters s
// mixes, in the order of confusableScripts, or "" when it uses at most one
// of them.
func mixedScripts(s string) (string, string) {
	seen := make([]bool, len(confusableScripts))
	for _, r := range s {
		if !unicode.IsLetter(r) {
			continue
		}
		for i, sc := range confusableScripts {
			if unicode.Is(sc.table, r) {
				seen[i] = true
			}
		}
	}
	first := ""
	for i, sc := range confusableScripts {
		if !seen[i] {
			continue
		}
		if first != "" {
			return first, sc.name
		}
		first = sc.name
	}
	return "", ""
}
