package wordlist_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/wordlist"
)

func moderate(t *testing.T, w *wordlist.Wordlist, text string) moderation.Decision {
	t.Helper()
	d, err := w.Moderate(context.Background(), &moderation.Message{Room: "lobby", User: "alice", Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMask(t *testing.T) {
	w, err := wordlist.New(wordlist.Config{Words: []string{"ass", "crypto", "loser", "free money"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want string
	}{
		{"plain", "you ass!", "you ***!"},
		{"case", "You ASS", "You ***"},
		{"word boundary: class", "first class passage", ""},
		{"word boundary: assassin", "assassin", ""},
		{"fullwidth", "ｃｒｙｐｔｏ now", "****** now"},
		{"cyrillic look-alikes", "buy сrурtо", "buy ******"},
		{"leetspeak", "l0s3r", "*****"},
		{"one for l", "1oser", "*****"},
		{"at and dollar", "@$$", "***"},
		{"combining marks", "a\u0301s\u0308s", "***"},
		{"zero-width space", "cryp\u200bto", "******"},
		{"keeps the rest", "héllo crypto, wörld", "héllo ******, wörld"},
		{"several", "ass crypto ass", "*** ****** ***"},
		{"phrase", "get FREE   money!", "get ****   *****!"},
		{"phrase across punctuation", "free-money", "****-*****"},
		{"phrase word alone", "money is free", ""},
		{"empty of words", "!!!", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := moderate(t, w, tt.in)
			if tt.want == "" {
				if d.Action != moderation.Accept {
					t.Fatalf("%q: got %v %q, want accept", tt.in, d.Action, d.Text)
				}
				return
			}
			if d.Action != moderation.Rewrite || d.Text != tt.want {
				t.Fatalf("%q: got %v %q, want rewrite %q", tt.in, d.Action, d.Text, tt.want)
			}
			if !strings.HasPrefix(d.Note, "masked ") {
				t.Errorf("note = %q, want masked N words", d.Note)
			}
		})
	}
}

func TestReject(t *testing.T) {
	w, err := wordlist.New(wordlist.Config{Action: wordlist.ActionReject, Words: []string{"spam"}, Reason: "no spam"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in string
		reject   bool
	}{
		{"word", "buy SPAM now", true},
		{"leet", "5p4m", true},
		{"fullwidth", "ｓｐａｍ", true},
		{"inside a word", "spammer", false},
		{"clean", "hello", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := moderate(t, w, tt.in)
			if got := d.Action == moderation.Reject; got != tt.reject {
				t.Fatalf("%q: got %v, want reject=%v", tt.in, d.Action, tt.reject)
			}
			if tt.reject && d.Reason != "no spam" {
				t.Errorf("reason = %q, want no spam", d.Reason)
			}
		})
	}
}

func TestFileAndReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "words.txt")
	if err := os.WriteFile(file, []byte("# comment\n\nfoo\n  bar  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := wordlist.New(wordlist.Config{File: file, Words: []string{"baz"}})
	if err != nil {
		t.Fatal(err)
	}
	if w.Len() != 3 {
		t.Fatalf("entries = %d, want 3 (foo, bar, baz)", w.Len())
	}
	if d := moderate(t, w, "foo bar baz qux"); d.Text != "*** *** *** qux" {
		t.Fatalf("got %q", d.Text)
	}
	if err := os.WriteFile(file, []byte("qux\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := moderate(t, w, "foo qux"); d.Text != "foo ***" {
		t.Fatalf("after reload got %q, want foo ***", d.Text)
	}
	if err := os.WriteFile(file, []byte("!!!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err == nil {
		t.Fatal("reload of an entry without letters succeeded")
	}
	if d := moderate(t, w, "foo qux"); d.Text != "foo ***" {
		t.Fatalf("after a failed reload got %q, want the old list in force", d.Text)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad action", "moderators:\n  - kind: wordlist\n    action: hide\n    words: [a]\n", `cfg.yaml:2: wordlist "wordlist": action is "hide"`},
		{"no words", "moderators:\n  - kind: wordlist\n", "give words, a file, or both"},
		{"missing file", "moderators:\n  - kind: wordlist\n    file: nope.txt\n", "cfg.yaml:3: wordlist"},
		{"unknown field", "moderators:\n  - kind: wordlist\n    word: [a]\n", `cfg.yaml:3: wordlist "wordlist": unknown field "word"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := moderation.Parse([]byte(tt.yaml), "cfg.yaml", moderation.Env{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
