package shape_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/shape"
)

func TestShape(t *testing.T) {
	tests := []struct {
		name   string
		cfg    shape.Config
		text   string
		action moderation.Action
		want   string // reason or rewritten text
	}{
		{"short enough", shape.Config{MaxChars: 5}, "héllo", moderation.Accept, ""},
		{"counts characters, not bytes", shape.Config{MaxChars: 5}, "ééééé", moderation.Accept, ""},
		{"too long", shape.Config{MaxChars: 5}, "hello!", moderation.Reject, "6 characters long; the limit is 5"},
		{"lines", shape.Config{MaxLines: 2}, "a\nb", moderation.Accept, ""},
		{"too many lines", shape.Config{MaxLines: 2}, "a\nb\nc", moderation.Reject, "3 lines; the limit is 2"},
		{"shouting", shape.Config{MaxCaps: 0.7}, "STOP SHOUTING AT ME", moderation.Reject, "do not shout"},
		{"short shouting passes", shape.Config{MaxCaps: 0.7}, "LOL OK", moderation.Accept, ""},
		{"mixed case passes", shape.Config{MaxCaps: 0.7}, "Hello There, How Are You", moderation.Accept, ""},
		{"uncased letters do not count", shape.Config{MaxCaps: 0.5, CapsMinLetters: 4}, "漢字漢字漢字 OK", moderation.Accept, ""},
		{"non-latin capitals", shape.Config{MaxCaps: 0.7}, "ПРЕКРАТИТЕ КРИЧАТЬ", moderation.Reject, "do not shout"},
		{"lower instead of reject", shape.Config{MaxCaps: 0.7, CapsAction: shape.CapsLower}, "STOP SHOUTING AT ME", moderation.Rewrite, "stop shouting at me"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := shape.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			d, err := s.Moderate(context.Background(), &moderation.Message{Text: tt.text})
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != tt.action {
				t.Fatalf("%q: got %v (%q %q), want %v", tt.text, d.Action, d.Reason, d.Text, tt.action)
			}
			switch d.Action {
			case moderation.Reject:
				if !strings.Contains(d.Reason, tt.want) {
					t.Fatalf("reason = %q, want it to contain %q", d.Reason, tt.want)
				}
			case moderation.Rewrite:
				if d.Text != tt.want {
					t.Fatalf("text = %q, want %q", d.Text, tt.want)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for name, cfg := range map[string]shape.Config{
		"no limit":   {},
		"caps > 1":   {MaxCaps: 1.5},
		"bad action": {MaxCaps: 0.5, CapsAction: "shout"},
		"negative":   {MaxChars: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}
