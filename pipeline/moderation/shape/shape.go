// Package shape is the shape moderator: it limits a message's length in
// characters, its number of lines, and its share of capital letters.
//
// Configuration (kind "shape"):
//
//	moderators:
//	  - kind: shape
//	    max_chars: 500        # characters (code points); 0: no limit
//	    max_lines: 10         # 0: no limit
//	    max_caps: 0.7         # share of capitals among cased letters; 0: no limit
//	    caps_min_letters: 12  # only for texts with at least this many cased letters (default 10)
//	    caps_action: reject   # reject (default) or lower (rewrite to lower case)
package shape

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"

	"github.com/chatstream/chatstream/pipeline/moderation"
)

// Kind is the configuration kind of the shape moderator.
const Kind = "shape"

func init() {
	moderation.Register(Kind, moderation.Configured(func(_ moderation.Spec, _ moderation.Env, cfg Config) (*Shape, error) {
		return New(cfg)
	}))
}

// Caps actions.
const (
	// CapsReject rejects a message with too many capitals.
	CapsReject = "reject"
	// CapsLower rewrites it to lower case.
	CapsLower = "lower"
)

// Config configures a Shape. A zero field takes the default in its
// comment; at least one limit is required.
type Config struct {
	// MaxChars is the most characters (code points) of a message. Default
	// 0: no limit.
	MaxChars int `yaml:"max_chars"`
	// MaxLines is the most lines of a message. Default 0: no limit.
	MaxLines int `yaml:"max_lines"`
	// MaxCaps is the largest share (0–1) of upper-case letters among the
	// cased letters of a message. Default 0: no limit.
	MaxCaps float64 `yaml:"max_caps"`
	// CapsMinLetters is the fewest cased letters a message needs for
	// MaxCaps to apply, so "OK" and "LOL" pass. Default 10.
	CapsMinLetters int `yaml:"caps_min_letters"`
	// CapsAction is CapsReject (default) or CapsLower.
	CapsAction string `yaml:"caps_action"`
}

func (c *Config) setDefaults() {
	if c.CapsMinLetters == 0 {
		c.CapsMinLetters = 10
	}
	if c.CapsAction == "" {
		c.CapsAction = CapsReject
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.MaxChars < 0 || c.MaxLines < 0 || c.CapsMinLetters < 0:
		return errors.New("limits must not be negative")
	case c.MaxCaps < 0 || c.MaxCaps > 1:
		return errors.New("max_caps is a share between 0 and 1")
	case c.MaxChars == 0 && c.MaxLines == 0 && c.MaxCaps == 0:
		return errors.New("give max_chars, max_lines or max_caps")
	case c.CapsAction != "" && c.CapsAction != CapsReject && c.CapsAction != CapsLower:
		return fmt.Errorf("caps_action is %q; want reject or lower", c.CapsAction)
	}
	return nil
}

// Shape is the shape moderator. It is safe for concurrent use.
type Shape struct{ cfg Config }

var _ moderation.Moderator = (*Shape)(nil)

// New builds a shape moderator.
func New(cfg Config) (*Shape, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("shape: %w", err)
	}
	cfg.setDefaults()
	return &Shape{cfg: cfg}, nil
}

// Describe summarises the limits.
func (s *Shape) Describe() string {
	var parts []string
	if s.cfg.MaxChars > 0 {
		parts = append(parts, fmt.Sprintf("max_chars=%d", s.cfg.MaxChars))
	}
	if s.cfg.MaxLines > 0 {
		parts = append(parts, fmt.Sprintf("max_lines=%d", s.cfg.MaxLines))
	}
	if s.cfg.MaxCaps > 0 {
		parts = append(parts, fmt.Sprintf("max_caps=%.2f (from %d letters, %s)", s.cfg.MaxCaps, s.cfg.CapsMinLetters, s.cfg.CapsAction))
	}
	return strings.Join(parts, " ")
}

// Moderate checks m's length, lines and capitals.
func (s *Shape) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	text := m.Text
	if s.cfg.MaxChars > 0 {
		if n := utf8.RuneCountInString(text); n > s.cfg.MaxChars {
			return moderation.Rejected(fmt.Sprintf("message is %d characters long; the limit is %d", n, s.cfg.MaxChars)), nil
		}
	}
	if s.cfg.MaxLines > 0 {
		if n := strings.Count(text, "\n") + 1; n > s.cfg.MaxLines {
			return moderation.Rejected(fmt.Sprintf("message has %d lines; the limit is %d", n, s.cfg.MaxLines)), nil
		}
	}
	if s.cfg.MaxCaps > 0 {
		upper, cased := 0, 0
		for _, r := range text {
			switch {
			case unicode.IsUpper(r):
				upper++
				cased++
			case unicode.IsLower(r):
				cased++
			}
		}
		if cased >= s.cfg.CapsMinLetters && float64(upper) > s.cfg.MaxCaps*float64(cased) {
			if s.cfg.CapsAction == CapsLower {
				return moderation.Rewritten(cases.Lower(language.Und).String(text), "lowered shouting"), nil
			}
			return moderation.Rejected("please do not shout (too many capital letters)"), nil
		}
	}
	return moderation.Accepted(), nil
}
