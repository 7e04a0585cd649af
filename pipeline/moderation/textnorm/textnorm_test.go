package textnorm_test

import (
	"slices"
	"testing"

	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

func TestFold(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ascii lower", "hello", "heiio"},
		{"upper", "HeLLo", "heiio"},
		{"fullwidth", "ｈｅｌｌｏ", "heiio"},
		{"cyrillic look-alikes", "сrуptо", "crypto"}, // с, у, о are Cyrillic
		{"cyrillic upper", "СРАМ", "cpam"},
		{"leetspeak", "h3ll0", "heiio"},
		{"leet s and t", "5p4m7", "spamt"},
		{"dollar and at", "$p@m", "spam"},
		{"accents", "crÿptö", "crypto"},
		{"combining marks", "c\u0301r\u0308ypto", "crypto"},
		{"zero-width space", "cry\u200bpto", "crypto"},
		{"ligature", "ﬁne", "fine"},
		{"german sharp s", "STRAẞE", "strasse"},
		{"greek omicron", "crypτο", "crypto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := textnorm.Fold(tt.in); got != tt.want {
				t.Errorf("Fold(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestWords(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"spaces and punctuation", "Hello, world! it's", []string{"Hello", "world", "it", "s"}},
		{"underscore separates", "a_b", []string{"a", "b"}},
		{"marks stay in the word", "fu\u0308ck you", []string{"fu\u0308ck", "you"}},
		{"zero-width stays in the word", "sp\u200bam", []string{"sp\u200bam"}},
		{"leet symbols", "$h1t @ss", []string{"$h1t", "@ss"}},
		{"emoji separates", "a😀b", []string{"a", "b"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for sp := range textnorm.Words(tt.in) {
				got = append(got, tt.in[sp.Start:sp.End])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Words(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"spacing and punctuation", "  FREE   crypto!!! ", "free crypto"},
		{"fullwidth", "ｆｒｅｅ ｃｒｙｐｔｏ", "free crypto"},
		{"emoji only", "😀  😀", "😀 😀"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := textnorm.Normalize(tt.in); got != tt.want {
				t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestAppendMask(t *testing.T) {
	if got := string(textnorm.AppendMask(nil, "fu\u0308c\u200bk")); got != "****" {
		t.Errorf("mask = %q, want **** (marks and zero-width characters dropped)", got)
	}
}

func TestLinks(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		hosts []string
	}{
		{"https url", "see https://Example.com/a?b=c.", []string{"example.com"}},
		{"http url with port", "http://example.com:8080/x", []string{"example.com"}},
		{"url with credentials", "https://u:p@evil.example/x", []string{"evil.example"}},
		{"bare domain", "go to example.com/path now", []string{"example.com"}},
		{"bare subdomain", "www.shop.example.co.uk!", []string{"www.shop.example.co.uk"}},
		{"in parentheses", "(see bit.ly/abc)", []string{"bit.ly"}},
		{"two links", "a.com and https://b.org", []string{"a.com", "b.org"}},
		{"not a tld", "node.js and file.txt", nil},
		{"sentence end", "I am done.Then more", nil},
		{"email", "mail bob@example.com", nil},
		{"other scheme", "ftp://example.com", nil},
		{"no dot", "hello world", nil},
		{"version number", "v1.2.3", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range textnorm.Links(tt.in) {
				got = append(got, l.Host)
			}
			if !slices.Equal(got, tt.hosts) {
				t.Errorf("Links(%q) hosts = %q, want %q", tt.in, got, tt.hosts)
			}
		})
	}
}
