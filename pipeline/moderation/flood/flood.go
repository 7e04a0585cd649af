// Package flood is the flood moderator: it rejects a message when its
// sender has already sent the same text (normalised: case, width, accents,
// look-alikes, punctuation and spacing do not count) to the same room too
// many times within a window.
//
// Configuration (kind "flood"):
//
//	moderators:
//	  - kind: flood
//	    max_repeats: 3   # identical messages allowed per window (default 3)
//	    window: 30s      # default 30s
//	    max_keys: 100000 # (user, room) pairs remembered (default 100,000)
//
// The state is kept in each instance's memory: a user whose messages are
// spread over several instances can repeat a text up to max_repeats times
// on each. That is accepted: flood control is about the obvious case, and
// the per-user rate limit holds across instances.
package flood

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

// Kind is the configuration kind of the flood moderator.
const Kind = "flood"

func init() {
	moderation.Register(Kind, moderation.Configured(func(_ moderation.Spec, _ moderation.Env, cfg Config) (*Flood, error) {
		return New(cfg)
	}))
}

// DefaultReason is the default reason of a rejection.
const DefaultReason = "you have already sent this message several times; please do not repeat yourself"

// DefaultMaxKeys is the default bound of the (user, room) pairs a Flood
// remembers. Each pair keeps at most maxRemembered recent messages (a hash
// and a time each), so the state of a Flood is bounded by
// MaxKeys × maxRemembered entries.
const DefaultMaxKeys = 100_000

// maxRemembered caps the recent messages kept per (user, room): older ones
// are forgotten even within the window.
const maxRemembered = 64

// Config configures a Flood. A zero field takes the default in its comment.
type Config struct {
	// MaxRepeats is how many identical messages a user may send to a room
	// within Window; more are rejected. Default 3.
	MaxRepeats int `yaml:"max_repeats"`
	// Window is the period over which repeats are counted. Default 30s.
	Window time.Duration `yaml:"window"`
	// MaxKeys bounds the (user, room) pairs remembered; beyond it the
	// least recently active pair is forgotten (and may repeat its text
	// afresh). Default DefaultMaxKeys.
	MaxKeys int `yaml:"max_keys"`
	// Reason is the reason of a rejection. Default DefaultReason.
	Reason string `yaml:"reason"`
}

func (c *Config) setDefaults() {
	if c.MaxRepeats == 0 {
		c.MaxRepeats = 3
	}
	if c.Window == 0 {
		c.Window = 30 * time.Second
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Reason == "" {
		c.Reason = DefaultReason
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	if c.MaxRepeats < 0 || c.Window < 0 || c.MaxKeys < 0 {
		return errors.New("max_repeats, window and max_keys must not be negative")
	}
	if c.MaxRepeats >= maxRemembered {
		return fmt.Errorf("max_repeats must be less than %d", maxRemembered)
	}
	return nil
}

// Flood is the flood moderator. It is safe for concurrent use.
type Flood struct {
	cfg  Config
	seed maphash.Seed

	// mu guards recent and every history in it: one lock makes the
	// lookup-or-create of a history and its update one step.
	mu sync.Mutex
	// recent holds the history of at most cfg.MaxKeys (user, room) pairs;
	// adding one more evicts the least recently active pair.
	recent *simplelru.LRU[key, *history]
}

var _ moderation.Moderator = (*Flood)(nil)

type key struct{ user, room string }

// history is the recent accepted messages of one (user, room), oldest
// first.
type history struct {
	sent []sent
}

type sent struct {
	hash uint64
	at   time.Time
}

// New builds a flood moderator.
func New(cfg Config) (*Flood, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flood: %w", err)
	}
	cfg.setDefaults()
	recent, err := simplelru.NewLRU[key, *history](cfg.MaxKeys, nil)
	if err != nil { // MaxKeys is positive after setDefaults
		return nil, fmt.Errorf("flood: %w", err)
	}
	return &Flood{cfg: cfg, seed: maphash.MakeSeed(), recent: recent}, nil
}

// Describe summarises the settings.
func (f *Flood) Describe() string {
	return fmt.Sprintf("max_repeats=%d window=%s (per instance, in memory)", f.cfg.MaxRepeats, f.cfg.Window)
}

// Moderate rejects m when its user sent the same normalised text to its
// room MaxRepeats times within the window before m.
func (f *Flood) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	var buf [512]byte
	var h uint64
	if b := textnorm.AppendNormalize(buf[:0], m.Text); len(b) > 0 {
		h = maphash.Bytes(f.seed, b)
	} else { // no words: emoji or punctuation only
		h = maphash.String(f.seed, textnorm.Normalize(m.Text))
	}
	now := m.Time
	if now.IsZero() {
		now = time.Now()
	}
	since := now.Add(-f.cfg.Window)
	f.mu.Lock()
	defer f.mu.Unlock()
	hist := f.history(key{m.User, m.Room})
	// Drop what left the window.
	i := 0
	for i < len(hist.sent) && !hist.sent[i].at.After(since) {
		i++
	}
	hist.sent = append(hist.sent[:0], hist.sent[i:]...)
	n := 0
	for _, s := range hist.sent {
		if s.hash == h {
			n++
		}
	}
	if n >= f.cfg.MaxRepeats {
		return moderation.Rejected(f.cfg.Reason), nil
	}
	if len(hist.sent) == maxRemembered {
		hist.sent = append(hist.sent[:0], hist.sent[1:]...)
	}
	hist.sent = append(hist.sent, sent{h, now})
	return moderation.Accepted(), nil
}

// history returns the history of k, creating it (and evicting the least
// recently active pair when MaxKeys are remembered). f.mu must be held.
func (f *Flood) history(k key) *history {
	if h, ok := f.recent.Get(k); ok { // Get marks k the most recently active
		return h
	}
	h := &history{}
	f.recent.Add(k, h)
	return h
}
