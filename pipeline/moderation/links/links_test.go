package links_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/links"
)

func TestLinks(t *testing.T) {
	tests := []struct {
		name   string
		cfg    links.Config
		text   string
		reason string // "": accepted
	}{
		{"denied domain", links.Config{Deny: []string{"bit.ly"}}, "see https://bit.ly/x", "links to bit.ly are not allowed here"},
		{"denied subdomain", links.Config{Deny: []string{"evil.com"}}, "www.evil.com/x", "links to www.evil.com"},
		{"denied bare domain", links.Config{Deny: []string{"bit.ly"}}, "bit.ly/abc", "links to bit.ly"},
		{"look-alike suffix is not a subdomain", links.Config{Deny: []string{"evil.com"}}, "notevil.com", ""},
		{"denied case-insensitive", links.Config{Deny: []string{"Bit.LY"}}, "HTTPS://BIT.LY/X", "links to bit.ly"},
		{"allowed domain", links.Config{Allow: []string{"example.com"}}, "docs at https://docs.example.com/a", ""},
		{"outside the allow list", links.Config{Allow: []string{"example.com"}}, "go to example.org", "links to example.org"},
		{"cyrillic look-alike is outside the allow list", links.Config{Allow: []string{"example.com"}}, "https://exаmple.com", "not allowed"},
		{"too many links", links.Config{MaxLinks: 2}, "a.com b.com c.com", "at most 2 links"},
		{"enough links", links.Config{MaxLinks: 2}, "a.com and b.com", ""},
		{"deny all", links.Config{Deny: []string{"*"}}, "x https://example.com", "links are not allowed here"},
		{"deny all, no link", links.Config{Deny: []string{"*"}}, "node.js is nice. I like it.", ""},
		{"email is not a link", links.Config{Deny: []string{"*"}}, "mail bob@example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := links.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			d, err := l.Moderate(context.Background(), &moderation.Message{Text: tt.text})
			if err != nil {
				t.Fatal(err)
			}
			if tt.reason == "" {
				if d.Action != moderation.Accept {
					t.Fatalf("%q: got %v %q, want accept", tt.text, d.Action, d.Reason)
				}
				return
			}
			if d.Action != moderation.Reject || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("%q: got %v %q, want reject with %q", tt.text, d.Action, d.Reason, tt.reason)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for name, cfg := range map[string]links.Config{
		"empty":    {},
		"a url":    {Deny: []string{"https://x.com"}},
		"negative": {MaxLinks: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}
