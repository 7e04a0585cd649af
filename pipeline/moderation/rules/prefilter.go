package rules

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// Go's regular expressions try a match at every position of the text,
// which makes an unanchored search cost microseconds even on a short
// message; most rules' patterns cannot match most messages. A matcher first
// checks a necessary condition derived from the pattern — the text contains
// one of a few literal strings — and runs the regular expression only when
// it holds. The condition never rejects a text the pattern matches.

// matcher is a compiled pattern with its prefilter.
type matcher struct {
	re *regexp.Regexp
	// lits are the literals one of which every match contains; nil: no
	// prefilter.
	lits []string
	// fold compares lits ASCII case-insensitively.
	fold bool
}

// maxClassRunes is the largest character class used as a prefilter (as one
// single-character literal per rune).
const maxClassRunes = 16

func compileMatcher(pattern string) (*matcher, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	m := &matcher{re: re}
	if tree, err := syntax.Parse(pattern, syntax.Perl); err == nil {
		if r, ok := required(tree.Simplify()); ok {
			m.lits, m.fold = r.lits, r.fold
		}
	}
	return m, nil
}

// MatchString reports whether s contains a match of the pattern.
func (m *matcher) MatchString(s string) bool {
	return m.maybe(s) && m.re.MatchString(s)
}

// maybe reports whether s may contain a match.
func (m *matcher) maybe(s string) bool {
	if m.lits == nil {
		return true
	}
	for _, l := range m.lits {
		if m.fold && containsFoldASCII(s, l) || !m.fold && strings.Contains(s, l) {
			return true
		}
	}
	return false
}

// mask replaces every match in s with stars.
func (m *matcher) mask(s string) string {
	if !m.maybe(s) {
		return s
	}
	return maskAll(m.re, s)
}

// requirement is a necessary condition of a match: it contains one of
// lits.
type requirement struct {
	lits []string
	fold bool
}

// better reports whether r is more selective than o: longer literals,
// then fewer of them.
func (r requirement) better(o requirement) bool {
	rl, ol := minLen(r.lits), minLen(o.lits)
	if rl != ol {
		return rl > ol
	}
	return len(r.lits) < len(o.lits)
}

func minLen(xs []string) int {
	n := -1
	for _, x := range xs {
		if n < 0 || len(x) < n {
			n = len(x)
		}
	}
	return n
}

// required derives a requirement from a parsed pattern; ok is false when
// none is known.
func required(re *syntax.Regexp) (requirement, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		s := string(re.Rune)
		fold := re.Flags&syntax.FoldCase != 0
		if fold {
			if !isASCII(s) {
				return requirement{}, false
			}
			s = strings.ToLower(s) // the parser keeps folded literals in upper case
		}
		return requirement{lits: []string{s}, fold: fold}, true
	case syntax.OpCharClass:
		var lits []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if len(lits) == maxClassRunes {
					return requirement{}, false
				}
				lits = append(lits, string(r))
			}
		}
		return requirement{lits: lits}, len(lits) > 0
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpConcat:
		var best requirement
		found := false
		for _, sub := range re.Sub {
			if r, ok := required(sub); ok && (!found || r.better(best)) {
				best, found = r, true
			}
		}
		return best, found
	case syntax.OpAlternate:
		var all requirement
		for _, sub := range re.Sub {
			r, ok := required(sub)
			if !ok {
				return requirement{}, false
			}
			all.lits = append(all.lits, r.lits...)
			all.fold = all.fold || r.fold
		}
		if all.fold {
			for _, l := range all.lits {
				if !isASCII(l) {
					return requirement{}, false
				}
			}
		}
		return all, true
	}
	return requirement{}, false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// containsFoldASCII reports whether s contains lit, an ASCII string,
// ignoring ASCII case.
func containsFoldASCII(s, lit string) bool {
	if lit == "" {
		return true
	}
	first := lower(lit[0])
	for i := 0; i+len(lit) <= len(s); i++ {
		if lower(s[i]) != first {
			continue
		}
		j := 1
		for j < len(lit) && lower(s[i+j]) == lower(lit[j]) {
			j++
		}
		if j == len(lit) {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// matchesOptimizations make CEL's matches() with a constant pattern use a
// prefiltered matcher (both its forms: text.matches(re) and
// matches(text, re)); a pattern that does not compile fails the program's
// creation, so a broken rule is reported when the file is loaded.
var matchesOptimizations = []*interpreter.RegexOptimization{
	{Function: "matches", OverloadID: "matches_string", RegexIndex: 1, Factory: matchesFactory},
	{Function: "matches", OverloadID: "matches", RegexIndex: 1, Factory: matchesFactory},
}

func matchesFactory(call interpreter.InterpretableCall, pattern string) (interpreter.InterpretableCall, error) {
	m, err := compileMatcher(pattern)
	if err != nil {
		return nil, err
	}
	return interpreter.NewCall(call.ID(), call.Function(), call.OverloadID(), call.Args(), func(values ...ref.Val) ref.Val {
		if len(values) != 2 {
			return types.NoSuchOverloadErr()
		}
		in, ok := values[0].(types.String)
		if !ok {
			return types.NoSuchOverloadErr()
		}
		return types.Bool(m.MatchString(string(in)))
	}), nil
}
