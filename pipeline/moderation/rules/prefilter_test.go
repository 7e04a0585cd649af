package rules

import (
	"regexp"
	"slices"
	"testing"
)

// TestPrefilter: the prefiltered matcher agrees with the regular
// expression on every text, and its literals are the expected ones.
func TestPrefilter(t *testing.T) {
	texts := []string{
		"", "hello", "FREE   CRYPTO", "free crypto now", "Free\tCrypto", "call 555-123-4567", "a@b.co",
		"x@y", "casino", "JACKPOT!", "bet", "1.2.3.4", "!!!!!!", "??", "ñandú CRYPTO", "crypt0",
	}
	tests := []struct {
		pattern string
		lits    []string
		fold    bool
	}{
		{`(?i)free\s+crypto`, []string{"crypto"}, true},
		{`(?i)casino|jackpot|betting`, []string{"casino", "jackpot", "betting"}, true},
		{`\d{3}-\d{3}-\d{4}`, []string{"-"}, false},
		{`[\w.+-]+@[\w-]+\.[\w.]+`, []string{"@"}, false},
		{`[!?]{6,}`, []string{"!", "?"}, false},
		{`\w+`, nil, false},
		{`a*b?`, nil, false},
		{`(?i)ñandú`, nil, false}, // non-ASCII folding: no prefilter
		{`x|\w`, nil, false},      // one alternative without literal
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			m, err := compileMatcher(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(m.lits)
			want := slices.Clone(tt.lits)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) || (got != nil && m.fold != tt.fold) {
				t.Errorf("literals %q fold %v, want %q fold %v", m.lits, m.fold, tt.lits, tt.fold)
			}
			re := regexp.MustCompile(tt.pattern)
			for _, s := range texts {
				if a, b := m.MatchString(s), re.MatchString(s); a != b {
					t.Errorf("%q: prefiltered %v, regexp %v", s, a, b)
				}
			}
		})
	}
}
