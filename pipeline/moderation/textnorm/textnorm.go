// Package textnorm turns chat text into the forms moderators match on: words
// with their spans in the original text, folded so that case, width,
// combining marks, invisible characters and common look-alikes do not
// matter, and the links a text contains.
//
// Folding a word applies, in order: Unicode compatibility decomposition
// (NFKD, so fullwidth letters and ligatures become plain letters), removal of
// combining marks and format characters (accents, zero-width spaces), Unicode
// case folding, and the confusables table below. The folded form is a
// matching key, not text to show: "1", "i" and "l" all fold to "i".
package textnorm

import (
	"iter"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// confusables maps look-alike characters (after case folding) to the Latin
// letter they imitate. 1, i and l share one key because each passes for the
// others; fullwidth forms need no entry because NFKD turns them into ASCII.
var confusables = map[rune]rune{
	'0': 'o', '1': 'i', 'l': 'i', '3': 'e', '4': 'a', '5': 's', '7': 't',
	'@': 'a', '$': 's',
	// Cyrillic
	'а': 'a', 'е': 'e', 'о': 'o', 'р': 'p', 'с': 'c', 'х': 'x', 'у': 'y',
	'і': 'i', 'ј': 'j', 'ѕ': 's', 'һ': 'h', 'ԁ': 'd', 'ӏ': 'i',
	// Cyrillic letters whose capitals pass for Latin ones (М, Т, В, Н, К)
	'м': 'm', 'т': 't', 'в': 'b', 'н': 'h', 'к': 'k',
	// Greek
	'α': 'a', 'ο': 'o', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ρ': 'p', 'τ': 't',
}

// asciiFold is the folded form of every ASCII byte (lower case, then the
// confusables table); 0 marks a byte that is not part of a word.
var asciiFold = func() [utf8.RuneSelf]byte {
	var t [utf8.RuneSelf]byte
	for c := range utf8.RuneSelf {
		r := rune(c)
		if !isWordRune(r) {
			continue
		}
		r = unicode.ToLower(r)
		if m, ok := confusables[r]; ok {
			r = m
		}
		t[c] = byte(r)
	}
	return t
}()

// isWordRune reports whether r belongs to a word: letters, digits, marks,
// format characters (so a zero-width space cannot split a word) and the
// symbols that stand in for letters (@ and $).
func isWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '@' || r == '$'
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) || unicode.Is(unicode.Cf, r)
}

// Invisible reports whether r is dropped by folding and by masking: a
// combining mark or a format character.
func Invisible(r rune) bool {
	return r >= utf8.RuneSelf && (unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || unicode.Is(unicode.Cf, r))
}

// Span is the byte range [Start, End) of a word in a text.
type Span struct {
	// Start and End are byte offsets.
	Start, End int
}

// Words yields the words of text in order. A word is a run of letters,
// digits, marks, format characters, @ and $; everything else separates
// words, so "class" is one word and never contains the word "ass".
func Words(text string) iter.Seq[Span] {
	return func(yield func(Span) bool) {
		start := -1
		for i := 0; i < len(text); {
			r, size := rune(text[i]), 1
			if r >= utf8.RuneSelf {
				r, size = utf8.DecodeRuneInString(text[i:])
			}
			if isWordRune(r) {
				if start < 0 {
					start = i
				}
			} else if start >= 0 {
				if !yield(Span{start, i}) {
					return
				}
				start = -1
			}
			i += size
		}
		if start >= 0 {
			yield(Span{start, len(text)})
		}
	}
}

// AppendFold appends the folded form of word to dst. ASCII words take a
// fast path that does not allocate.
func AppendFold(dst []byte, word string) []byte {
	ascii := true
	for i := 0; i < len(word); i++ {
		if word[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		for i := 0; i < len(word); i++ {
			if c := asciiFold[word[i]]; c != 0 {
				dst = append(dst, c)
			}
		}
		return dst
	}
	decomposed := norm.NFKD.String(word)
	var b strings.Builder
	b.Grow(len(decomposed))
	for _, r := range decomposed {
		if !Invisible(r) {
			b.WriteRune(r)
		}
	}
	// A Caser is stateful, so each call takes its own.
	folded := cases.Fold().String(b.String())
	for _, r := range folded {
		if r < utf8.RuneSelf {
			if c := asciiFold[r]; c != 0 {
				dst = append(dst, c)
			}
			continue
		}
		if Invisible(r) {
			continue
		}
		if m, ok := confusables[r]; ok {
			r = m
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// Fold returns the folded form of one word.
func Fold(word string) string { return string(AppendFold(nil, word)) }

// FoldWords returns the folded form of every word of text.
func FoldWords(text string) []string {
	var out []string
	var buf []byte
	for sp := range Words(text) {
		buf = AppendFold(buf[:0], text[sp.Start:sp.End])
		if len(buf) > 0 {
			out = append(out, string(buf))
		}
	}
	return out
}

// Normalize returns the folded words of text joined by single spaces, so
// "FREE   ｃｒｙｐｔｏ!!" and "free crypto" normalise alike. A text without
// words (only emoji or punctuation, say) normalises to itself with runs of
// white space collapsed.
func Normalize(text string) string {
	b := AppendNormalize(make([]byte, 0, len(text)), text)
	if len(b) == 0 {
		return strings.Join(strings.Fields(text), " ")
	}
	return string(b)
}

// AppendNormalize appends the folded words of text joined by single spaces
// to dst (nothing for a text without words).
func AppendNormalize(dst []byte, text string) []byte {
	start := len(dst)
	for sp := range Words(text) {
		n := len(dst)
		if n > start {
			dst = append(dst, ' ')
		}
		folded := AppendFold(dst, text[sp.Start:sp.End])
		if len(folded) == len(dst) { // the word folded to nothing
			dst = dst[:n]
			continue
		}
		dst = folded
	}
	return dst
}

// AppendMask appends word with every visible character replaced by '*';
// combining marks and format characters are dropped, so a masked word shows
// one star per character a reader sees.
func AppendMask(dst []byte, word string) []byte {
	for _, r := range word {
		if !Invisible(r) {
			dst = append(dst, '*')
		}
	}
	return dst
}
