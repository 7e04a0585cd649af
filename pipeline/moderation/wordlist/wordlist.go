// Package wordlist is the wordlist moderator: it finds listed words in a
// message, whole words only, whatever their case, width, accents or
// look-alike characters (see package textnorm), and masks them with stars
// or rejects the message.
//
// Configuration (kind "wordlist"):
//
//	moderators:
//	  - kind: wordlist
//	    name: profanity     # optional, default wordlist
//	    action: mask        # mask (default) or reject
//	    file: words.txt     # one entry per line, # comments; relative to the config file
//	    words: [darn, heck] # inline entries, added to the file's
//	    reason: mind your language   # reject reason
//	    poll: 2s            # how often the file is checked for changes; -1s never
//
// An entry of several words ("free crypto") matches those words in a row,
// whatever separates them; each of them is masked, the separators kept.
package wordlist

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

// Kind is the configuration kind of the wordlist moderator.
const Kind = "wordlist"

func init() {
	moderation.Register(Kind, func(spec moderation.Spec, env moderation.Env) (moderation.Moderator, error) {
		var cfg Config
		if err := spec.Decode(&cfg); err != nil {
			return nil, err
		}
		cfg.File = spec.Path(cfg.File)
		cfg.Logger = env.Logger
		if err := cfg.Validate(); err != nil {
			return nil, spec.Errorf("", "%w", err)
		}
		w, err := New(cfg)
		if err != nil {
			return nil, spec.Errorf("file", "%w", err)
		}
		return w, nil
	})
}

// Actions of a wordlist.
const (
	// ActionMask replaces every character of each listed word with '*'.
	ActionMask = "mask"
	// ActionReject refuses a message that contains a listed word.
	ActionReject = "reject"
)

// DefaultReason is the default reason of a rejection.
const DefaultReason = "your message contains a word that is not allowed here"

// Config configures a Wordlist. A zero field takes the default in its
// comment.
type Config struct {
	// Action is ActionMask or ActionReject. Default ActionMask.
	Action string `yaml:"action"`
	// Words are entries given inline.
	Words []string `yaml:"words"`
	// File names a file of entries, one per line; blank lines and lines
	// starting with # are skipped.
	File string `yaml:"file"`
	// Reason is the reason of a rejection. Default DefaultReason.
	Reason string `yaml:"reason"`
	// Poll is how often File is checked for changes (then reloaded).
	// Default moderation.DefaultPoll; negative: never.
	Poll time.Duration `yaml:"poll"`
	// Logger receives reload diagnostics. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.Action == "" {
		c.Action = ActionMask
	}
	if c.Reason == "" {
		c.Reason = DefaultReason
	}
	if c.Poll == 0 {
		c.Poll = moderation.DefaultPoll
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.Action != "" && c.Action != ActionMask && c.Action != ActionReject:
		return fmt.Errorf("action is %q; want mask or reject", c.Action)
	case len(c.Words) == 0 && c.File == "":
		return errors.New("give words, a file, or both")
	}
	return nil
}

// Wordlist is the wordlist moderator. It is safe for concurrent use.
type Wordlist struct {
	cfg  Config
	list atomic.Pointer[list]
	// reloadMu serialises reloads (SIGHUP and the file watcher).
	reloadMu sync.Mutex
	// loaded is the stamp of the file New read; Run watches for changes
	// from it.
	loaded moderation.FileStamp
}

var (
	_ moderation.Moderator = (*Wordlist)(nil)
	_ moderation.Reloader  = (*Wordlist)(nil)
	_ moderation.Runner    = (*Wordlist)(nil)
)

// New builds a wordlist and reads its file.
func New(cfg Config) (*Wordlist, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("wordlist: %w", err)
	}
	cfg.setDefaults()
	w := &Wordlist{cfg: cfg}
	if cfg.File != "" {
		w.loaded, _ = moderation.StatFile(cfg.File) // load reports a missing file
	}
	l, err := w.load()
	if err != nil {
		return nil, err
	}
	w.list.Store(l)
	return w, nil
}

// Len returns the number of entries in force.
func (w *Wordlist) Len() int { return w.list.Load().n }

// Describe summarises the wordlist.
func (w *Wordlist) Describe() string {
	s := fmt.Sprintf("action=%s entries=%d", w.cfg.Action, w.Len())
	if w.cfg.File != "" {
		s += " file=" + w.cfg.File
	}
	return s
}

// Reload rereads the file; on error the entries in force stay.
func (w *Wordlist) Reload() error {
	w.reloadMu.Lock()
	defer w.reloadMu.Unlock()
	l, err := w.load()
	if err != nil {
		return err
	}
	w.list.Store(l)
	return nil
}

// Run reloads the file when it changes, until ctx is done.
func (w *Wordlist) Run(ctx context.Context) error {
	if w.cfg.File == "" || w.cfg.Poll < 0 {
		<-ctx.Done()
		return nil
	}
	return moderation.WatchFile(ctx, w.cfg.File, w.loaded, w.cfg.Poll, w.cfg.Logger, w.Reload)
}

func (w *Wordlist) load() (*list, error) {
	entries := append([]string(nil), w.cfg.Words...)
	if w.cfg.File != "" {
		data, err := os.ReadFile(w.cfg.File)
		if err != nil {
			return nil, fmt.Errorf("wordlist: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				entries = append(entries, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("wordlist: %s: %w", w.cfg.File, err)
		}
	}
	return compile(entries)
}

// list is a compiled set of entries.
type list struct {
	// words holds the folded single-word entries.
	words map[string]struct{}
	// phrases maps the first folded word of each multi-word entry to the
	// entries' folded words.
	phrases map[string][][]string
	n       int
}

func compile(entries []string) (*list, error) {
	l := &list{words: map[string]struct{}{}, phrases: map[string][][]string{}}
	for _, e := range entries {
		ws := textnorm.FoldWords(e)
		switch len(ws) {
		case 0:
			return nil, fmt.Errorf("wordlist: entry %q has no letters or digits", e)
		case 1:
			l.words[ws[0]] = struct{}{}
		default:
			l.phrases[ws[0]] = append(l.phrases[ws[0]], ws)
		}
		l.n++
	}
	return l, nil
}

// token is a word of a message: its span and folded form.
type token struct {
	span   textnorm.Span
	folded string
}

// find calls match for every span of text covered by an entry, in order of
// start.
func (l *list) find(text string, match func(textnorm.Span) bool) {
	var buf []byte
	if len(l.phrases) == 0 {
		for sp := range textnorm.Words(text) {
			buf = textnorm.AppendFold(buf[:0], text[sp.Start:sp.End])
			if _, ok := l.words[string(buf)]; ok {
				if !match(sp) {
					return
				}
			}
		}
		return
	}
	var toks []token
	for sp := range textnorm.Words(text) {
		buf = textnorm.AppendFold(buf[:0], text[sp.Start:sp.End])
		toks = append(toks, token{sp, string(buf)})
	}
	for i, t := range toks {
		if _, ok := l.words[t.folded]; ok {
			if !match(t.span) {
				return
			}
			continue
		}
	phrases:
		for _, p := range l.phrases[t.folded] {
			if i+len(p) > len(toks) {
				continue
			}
			for j := 1; j < len(p); j++ {
				if toks[i+j].folded != p[j] {
					continue phrases
				}
			}
			for _, w := range toks[i : i+len(p)] {
				if !match(w.span) {
					return
				}
			}
			break
		}
	}
}

// Moderate masks or rejects the listed words of m.
func (w *Wordlist) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	l := w.list.Load()
	if w.cfg.Action == ActionReject {
		found := false
		l.find(m.Text, func(textnorm.Span) bool { found = true; return false })
		if found {
			return moderation.Rejected(w.cfg.Reason), nil
		}
		return moderation.Accepted(), nil
	}
	var out []byte
	done, n := 0, 0
	l.find(m.Text, func(sp textnorm.Span) bool {
		if sp.Start < done { // part of a phrase already masked
			return true
		}
		if out == nil {
			out = make([]byte, 0, len(m.Text))
		}
		out = append(out, m.Text[done:sp.Start]...)
		out = textnorm.AppendMask(out, m.Text[sp.Start:sp.End])
		done = sp.End
		n++
		return true
	})
	if n == 0 {
		return moderation.Accepted(), nil
	}
	out = append(out, m.Text[done:]...)
	note := "masked 1 word"
	if n > 1 {
		note = fmt.Sprintf("masked %d words", n)
	}
	return moderation.Rewritten(string(out), note), nil
}
