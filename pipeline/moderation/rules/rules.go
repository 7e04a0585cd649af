// Package rules is the rules moderator: moderation rules written as CEL
// expressions (https://cel.dev) in a YAML file, no Go needed.
//
// Configuration (kind "rules"):
//
//	moderators:
//	  - kind: rules
//	    file: rules.yaml   # relative to the config file
//	    poll: 2s           # how often the file is checked for changes; -1s never
//
// or the rules inline, under rules: instead of file:. A rules file:
//
//	rules:
//	  - name: crypto-spam
//	    when: text.matches("(?i)free\\s+crypto") && room == "lobby"
//	    action: reject
//	    reason: no crypto offers in the lobby
//	  - name: phone-numbers
//	    action: mask
//	    pattern: '\d{3}[- ]?\d{4}'
//	  - name: shouting
//	    when: size(text) > 20 && text.upperAscii() == text
//	    action: rewrite
//	    text: text.lowerAscii()
//	    note: lowered
//
// Expressions see room, user, conn_id, text (string) and metadata
// (map(string, string)), CEL's standard functions, the strings extension
// (lowerAscii, replace, split, ...) and these helpers:
//
//	normalize(s)          folded words of s joined by spaces (case, width, accents, look-alikes removed)
//	words(s)              folded words of s, as a list
//	containsWord(s, w)    s contains the word (or words in a row) w, compared folded
//	domains(s)            host names of the links in s
//	mask(s, re)           s with every match of the regular expression re replaced by stars
//
// Rules run in file order. A matching reject rule ends the evaluation; a
// rewrite or mask rule replaces the text that the following rules see. A
// broken file is reported with its line, and a reload that fails keeps the
// rules in force.
package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
	"go.yaml.in/yaml/v3"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

// Kind is the configuration kind of the rules moderator.
const Kind = "rules"

func init() {
	moderation.Register(Kind, func(spec moderation.Spec, env moderation.Env) (moderation.Moderator, error) {
		var cfg Config
		if err := spec.Decode(&cfg); err != nil {
			return nil, err
		}
		if cfg.File != "" && cfg.Rules.Kind != 0 {
			return nil, spec.Errorf("rules", "give either file or rules, not both")
		}
		if cfg.File == "" && cfg.Rules.Kind == 0 {
			return nil, spec.Errorf("", "give a rules file or inline rules")
		}
		cfg.File = spec.Path(cfg.File)
		cfg.Source = spec.File
		cfg.Logger = env.Logger
		return New(cfg)
	})
}

// Actions of a rule.
const (
	// ActionReject refuses the message with the rule's reason.
	ActionReject = "reject"
	// ActionRewrite replaces the text with the value of the rule's text
	// expression.
	ActionRewrite = "rewrite"
	// ActionMask replaces every match of the rule's pattern with stars.
	ActionMask = "mask"
)

// Config configures a Rules moderator: either File or Rules.
type Config struct {
	// File is the rules file.
	File string `yaml:"file"`
	// Rules are inline rules: a sequence of rules, as under a rules file's
	// rules key.
	Rules yaml.Node `yaml:"rules"`
	// Poll is how often File is checked for changes (then reloaded).
	// Default moderation.DefaultPoll; negative: never.
	Poll time.Duration `yaml:"poll"`
	// Source names the file that holds inline rules, for error messages.
	Source string `yaml:"-"`
	// Logger receives runtime errors of rules. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// ruleSpec is one rule as written.
type ruleSpec struct {
	// Name names the rule in stats and dry runs. Default "rule<N>".
	Name string `yaml:"name"`
	// When is a CEL expression of type bool; the rule applies when it is
	// true. Optional for mask rules (default: the pattern matches).
	When string `yaml:"when"`
	// Action is reject, rewrite or mask.
	Action string `yaml:"action"`
	// Reason is shown to the sender of a rejected message.
	Reason string `yaml:"reason"`
	// Text is the CEL expression (of type string) of a rewrite's new text.
	Text string `yaml:"text"`
	// Pattern is the regular expression (RE2) a mask rule masks.
	Pattern string `yaml:"pattern"`
	// Note describes a rewrite in the message's metadata.
	Note string `yaml:"note"`
}

type rulesFile struct {
	Rules yaml.Node `yaml:"rules"`
}

// Rules is the rules moderator. It is safe for concurrent use.
type Rules struct {
	cfg Config
	env *cel.Env
	res *regexCache
	set atomic.Pointer[ruleSet]
	// reloadMu serialises reloads (SIGHUP and the file watcher).
	reloadMu sync.Mutex
	// loaded is the stamp of the file New read; Run watches for changes
	// from it.
	loaded moderation.FileStamp

	// countsMu guards counts, which outlive reloads so that a rule's
	// counters survive an edit of another rule.
	countsMu sync.Mutex
	counts   map[string]*ruleCounts
}

var (
	_ moderation.Moderator   = (*Rules)(nil)
	_ moderation.Reloader    = (*Rules)(nil)
	_ moderation.Runner      = (*Rules)(nil)
	_ moderation.RuleCounter = (*Rules)(nil)
)

type ruleSet struct {
	rules []*rule
}

type rule struct {
	name    string
	line    int
	action  string
	reason  string
	note    string
	when    cel.Program // nil: a mask rule that applies when its pattern matches
	text    cel.Program
	pattern *matcher
	counts  *ruleCounts
	// warned is set once a runtime error of the rule has been logged.
	warned atomic.Bool
}

type ruleCounts struct {
	rejected, rewritten, errors atomic.Int64
}

// New compiles the rules of cfg.
func New(cfg Config) (*Rules, error) {
	if cfg.Poll == 0 {
		cfg.Poll = moderation.DefaultPoll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Rules{cfg: cfg, res: newRegexCache(), counts: map[string]*ruleCounts{}}
	env, err := newEnv(r.res)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	r.env = env
	if cfg.File != "" {
		r.loaded, _ = moderation.StatFile(cfg.File) // load reports a missing file
	}
	set, err := r.load()
	if err != nil {
		return nil, err
	}
	r.set.Store(set)
	return r, nil
}

// Check compiles the rules file data (named file in errors) without
// building a moderator. It returns the number of rules.
func Check(data []byte, file string) (int, error) {
	r := &Rules{res: newRegexCache(), counts: map[string]*ruleCounts{}}
	env, err := newEnv(r.res)
	if err != nil {
		return 0, err
	}
	r.env = env
	set, err := r.compileFile(data, file)
	if err != nil {
		return 0, err
	}
	return len(set.rules), nil
}

// Len returns the number of rules in force.
func (r *Rules) Len() int { return len(r.set.Load().rules) }

// Describe summarises the rules in force.
func (r *Rules) Describe() string {
	set := r.set.Load()
	names := make([]string, len(set.rules))
	for i, ru := range set.rules {
		names[i] = ru.name
	}
	s := fmt.Sprintf("rules=%d [%s]", len(set.rules), strings.Join(names, ", "))
	if r.cfg.File != "" {
		s += " file=" + r.cfg.File
		if r.cfg.Poll > 0 {
			s += fmt.Sprintf(" (reloaded on change, checked every %s, and on SIGHUP)", r.cfg.Poll)
		}
	}
	return s
}

// RuleStats returns the decisions of each rule by name.
func (r *Rules) RuleStats() map[string]moderation.Counts {
	r.countsMu.Lock()
	defer r.countsMu.Unlock()
	out := make(map[string]moderation.Counts, len(r.counts))
	for name, c := range r.counts {
		out[name] = moderation.Counts{Rejected: c.rejected.Load(), Rewritten: c.rewritten.Load(), Errors: c.errors.Load()}
	}
	return out
}

// Reload rereads the rules file. When the new file is broken the rules in
// force stay and the error is returned.
func (r *Rules) Reload() error {
	if r.cfg.File == "" {
		return nil
	}
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	set, err := r.load()
	if err != nil {
		return err
	}
	r.set.Store(set)
	return nil
}

// Run reloads the rules file when it changes, until ctx is done.
func (r *Rules) Run(ctx context.Context) error {
	if r.cfg.File == "" || r.cfg.Poll < 0 {
		<-ctx.Done()
		return nil
	}
	return moderation.WatchFile(ctx, r.cfg.File, r.loaded, r.cfg.Poll, r.cfg.Logger, r.Reload)
}

func (r *Rules) load() (*ruleSet, error) {
	if r.cfg.File == "" {
		return r.compileSeq(&r.cfg.Rules, r.cfg.Source)
	}
	data, err := os.ReadFile(r.cfg.File)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return r.compileFile(data, r.cfg.File)
}

func (r *Rules) compileFile(data []byte, file string) (*ruleSet, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &ruleSet{}, nil
		}
		return nil, &moderation.ConfigError{File: file, Err: fmt.Errorf("yaml: %w", err)}
	}
	if len(doc.Content) == 0 {
		return &ruleSet{}, nil
	}
	var rf rulesFile
	if err := moderation.DecodeNode(file, doc.Content[0], &rf); err != nil {
		return nil, err
	}
	return r.compileSeq(&rf.Rules, file)
}

func (r *Rules) compileSeq(seq *yaml.Node, file string) (*ruleSet, error) {
	set := &ruleSet{}
	if seq.Kind == 0 {
		return set, nil
	}
	if seq.Kind != yaml.SequenceNode {
		return nil, &moderation.ConfigError{File: file, Line: seq.Line, Err: errors.New("rules must be a list")}
	}
	seen := map[string]int{}
	for i, n := range seq.Content {
		ru, err := r.compileRule(n, file, i+1)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[ru.name]; dup {
			return nil, &moderation.ConfigError{File: file, Line: n.Line, Err: fmt.Errorf("rule name %q is already used on line %d", ru.name, prev)}
		}
		seen[ru.name] = n.Line
		set.rules = append(set.rules, ru)
	}
	return set, nil
}

func (r *Rules) compileRule(n *yaml.Node, file string, index int) (*rule, error) {
	var s ruleSpec
	if err := moderation.DecodeNode(file, n, &s); err != nil {
		return nil, err
	}
	if s.Name == "" {
		s.Name = fmt.Sprintf("rule%d", index)
	}
	fail := func(key string, format string, args ...any) error {
		line := n.Line
		if l := moderation.KeyLine(n, key); l > 0 {
			line = l
		}
		return &moderation.ConfigError{File: file, Line: line, Err: fmt.Errorf("rule %q: %s", s.Name, fmt.Sprintf(format, args...))}
	}
	ru := &rule{name: s.Name, line: n.Line, action: s.Action, reason: s.Reason, note: s.Note}
	switch s.Action {
	case ActionReject:
		if ru.reason == "" {
			ru.reason = moderation.DefaultReason
		}
		if s.Text != "" || s.Pattern != "" {
			return nil, fail("action", "a reject rule has no text or pattern")
		}
	case ActionRewrite:
		if s.Text == "" {
			return nil, fail("action", "a rewrite rule needs text: an expression of the new text")
		}
		if s.Pattern != "" {
			return nil, fail("pattern", "a rewrite rule has no pattern (use action: mask)")
		}
	case ActionMask:
		if s.Pattern == "" {
			return nil, fail("action", "a mask rule needs a pattern")
		}
		m, err := compileMatcher(s.Pattern)
		if err != nil {
			return nil, fail("pattern", "pattern: %v", err)
		}
		ru.pattern = m
	case "":
		return nil, fail("", "action is missing; want reject, rewrite or mask")
	default:
		return nil, fail("action", "action is %q; want reject, rewrite or mask", s.Action)
	}
	if s.Reason != "" && s.Action != ActionReject {
		return nil, fail("reason", "only a reject rule has a reason")
	}
	if s.When == "" && s.Action != ActionMask {
		return nil, fail("", "when is missing: an expression of type bool")
	}
	var err error
	if s.When != "" {
		if ru.when, err = r.compileExpr(s.When, valueNode(n, "when"), file, s.Name, "when", cel.BoolType); err != nil {
			return nil, err
		}
	}
	if s.Text != "" {
		if ru.text, err = r.compileExpr(s.Text, valueNode(n, "text"), file, s.Name, "text", cel.StringType); err != nil {
			return nil, err
		}
	}
	ru.counts = r.countsOf(s.Name)
	return ru, nil
}

func (r *Rules) countsOf(name string) *ruleCounts {
	r.countsMu.Lock()
	defer r.countsMu.Unlock()
	c, ok := r.counts[name]
	if !ok {
		c = &ruleCounts{}
		r.counts[name] = c
	}
	return c
}

// valueNode returns the value of key in the mapping n.
func valueNode(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return n
}

// compileExpr compiles a CEL expression written at node v, checks its
// type, and reports errors at their line in the file.
func (r *Rules) compileExpr(src string, v *yaml.Node, file, name, field string, want *cel.Type) (cel.Program, error) {
	ast, iss := r.env.Compile(src)
	if iss.Err() != nil {
		e := iss.Errors()[0]
		line := v.Line
		loc := e.Location
		if v.Style == yaml.LiteralStyle || v.Style == yaml.FoldedStyle {
			line++ // a block scalar starts on the line after its indicator
		}
		if loc != nil && loc.Line() > 0 {
			line += loc.Line() - 1
		}
		msg := e.Message
		if loc != nil && loc.Line() > 0 {
			msg += fmt.Sprintf(" (at %d:%d of the expression)", loc.Line(), loc.Column()+1)
		}
		if n := len(iss.Errors()); n > 1 {
			msg += fmt.Sprintf(" (and %d more errors)", n-1)
		}
		return nil, &moderation.ConfigError{File: file, Line: line, Err: fmt.Errorf("rule %q: %s: %s", name, field, msg)}
	}
	if out := ast.OutputType(); !out.IsExactType(want) && !out.IsExactType(cel.DynType) {
		return nil, &moderation.ConfigError{File: file, Line: v.Line, Err: fmt.Errorf("rule %q: %s must be of type %s, not %s", name, field, want, out)}
	}
	prg, err := r.env.Program(ast, cel.OptimizeRegex(matchesOptimizations...), cel.EvalOptions(cel.OptOptimize))
	if err != nil { // a constant regular expression that does not compile, say
		return nil, &moderation.ConfigError{File: file, Line: v.Line, Err: fmt.Errorf("rule %q: %s: %w", name, field, err)}
	}
	return prg, nil
}

// Moderate runs the rules over m in order.
func (r *Rules) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	set := r.set.Load()
	if len(set.rules) == 0 {
		return moderation.Accepted(), nil
	}
	act := newActivation(m)
	text := m.Text
	var names, notes []string
	for _, ru := range set.rules {
		ok, err := ru.matches(act, text)
		if err != nil {
			r.runtimeError(ru, m, err)
			continue
		}
		if !ok {
			continue
		}
		var next string
		switch ru.action {
		case ActionReject:
			ru.counts.rejected.Add(1)
			return moderation.Decision{Action: moderation.Reject, Reason: ru.reason, Rule: ru.name}, nil
		case ActionRewrite:
			out, _, err := ru.text.Eval(act)
			if err != nil {
				r.runtimeError(ru, m, err)
				continue
			}
			s, isString := out.(types.String)
			if !isString {
				r.runtimeError(ru, m, fmt.Errorf("text is %s, not a string", out.Type()))
				continue
			}
			next = string(s)
		case ActionMask:
			next = ru.pattern.mask(text)
		}
		if next == text {
			continue
		}
		ru.counts.rewritten.Add(1)
		text = next
		act.text = types.String(text)
		names = append(names, ru.name)
		note := ru.note
		if note == "" {
			note = ru.action + " by rule " + ru.name
		}
		notes = append(notes, note)
	}
	if len(names) == 0 {
		return moderation.Accepted(), nil
	}
	return moderation.Decision{Action: moderation.Rewrite, Text: text, Note: strings.Join(notes, ", "), Rule: strings.Join(names, ",")}, nil
}

func (ru *rule) matches(act *activation, text string) (bool, error) {
	if ru.when == nil {
		return ru.pattern.MatchString(text), nil
	}
	out, _, err := ru.when.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("when is %s, not a bool", out.Type())
	}
	return bool(b), nil
}

// runtimeError counts a rule that failed on a message; the first failure
// of each rule is logged. The rule is treated as not matching.
func (r *Rules) runtimeError(ru *rule, m *moderation.Message, err error) {
	ru.counts.errors.Add(1)
	if !ru.warned.Swap(true) {
		r.cfg.Logger.Warn("rule failed; it is skipped for this message (logged once per rule)",
			"rule", ru.name, "line", ru.line, "msg_id", m.ID, "room", m.Room, "err", err)
	}
}

// activation resolves the variables of a message for CEL, boxed once per
// message.
type activation struct {
	room, user, connID, text ref.Val
	metadata                 ref.Val
}

func newActivation(m *moderation.Message) *activation {
	md := m.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return &activation{
		room: types.String(m.Room), user: types.String(m.User), connID: types.String(m.ConnID),
		text: types.String(m.Text), metadata: types.NewStringStringMap(types.DefaultTypeAdapter, md),
	}
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "room":
		return a.room, true
	case "user":
		return a.user, true
	case "conn_id":
		return a.connID, true
	case "text":
		return a.text, true
	case "metadata":
		return a.metadata, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// maskAll replaces every match of re in s with one star per visible
// character.
func maskAll(re *regexp.Regexp, s string) string {
	return re.ReplaceAllStringFunc(s, func(m string) string {
		return string(textnorm.AppendMask(nil, m))
	})
}
