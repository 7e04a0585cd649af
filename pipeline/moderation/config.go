package moderation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"unicode"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// Env is what moderators may use besides their own settings.
type Env struct {
	// Logger receives moderators' diagnostics. Default slog.Default().
	Logger *slog.Logger
	// Redis is the deployment's Redis, or nil when the server runs without
	// one. Moderators that share state across instances (ratelimit) use it.
	Redis redis.UniversalClient
	// RedisPrefix starts every key a moderator writes. Default
	// redisstore.DefaultPrefix, the deployment's.
	RedisPrefix string
	// DryRun is set when the chain replays recorded traffic: moderators
	// keep all state in memory and must not write anywhere.
	DryRun bool
	// HTTPClient is used by moderators that call out (webhook); they set
	// their own timeouts per request. Default: a client of their own.
	HTTPClient *http.Client
}

func (e *Env) setDefaults() {
	if e.Logger == nil {
		e.Logger = slog.Default()
	}
	if e.RedisPrefix == "" {
		e.RedisPrefix = redisstore.DefaultPrefix
	}
}

// Spec is one moderator's entry in a configuration file.
type Spec struct {
	// Kind is the entry's kind (wordlist, rules, ...).
	Kind string
	// Name names the moderator in error frames, logs and stats. Default Kind.
	Name string
	// OnError is what happens when the moderator cannot decide: Reject
	// (fail closed, the default) or Accept (fail open).
	OnError Action
	// File is the configuration file, "" when the entry did not come from
	// a file.
	File string
	// Line is the entry's line in File.
	Line int

	node *yaml.Node
}

// commonKeys are the entry fields the chain itself reads.
var commonKeys = []string{"kind", "name", "on_error"}

// Decode decodes the entry's kind-specific settings into v, a pointer to a
// struct with yaml tags. Fields of the entry that v does not have are
// errors, so a misspelt setting is not silently ignored.
func (s Spec) Decode(v any) error {
	if s.node == nil {
		return nil
	}
	if err := DecodeNode(s.File, s.node, v, commonKeys...); err != nil {
		return s.wrap(err)
	}
	return nil
}

// Path resolves a file named in the entry: relative paths are relative to
// the configuration file's directory.
func (s Spec) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || s.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(s.File), p)
}

// Errorf returns an error about the entry's field (or the entry itself when
// field is "" or absent), with the file and line.
func (s Spec) Errorf(field, format string, args ...any) error {
	line := s.Line
	if field != "" {
		if l := KeyLine(s.node, field); l > 0 {
			line = l
		}
	}
	return &ConfigError{File: s.File, Line: line, Err: fmt.Errorf("%s %q: %w", s.Kind, s.Name, fmt.Errorf(format, args...))}
}

// wrap adds the entry's kind and name to an error from DecodeNode.
func (s Spec) wrap(err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{File: ce.File, Line: ce.Line, Err: fmt.Errorf("%s %q: %w", s.Kind, s.Name, ce.Err)}
	}
	return &ConfigError{File: s.File, Line: s.Line, Err: fmt.Errorf("%s %q: %w", s.Kind, s.Name, err)}
}

// ConfigError is an error in a configuration file, at a line.
type ConfigError struct {
	// File names the file ("" when the configuration came from memory).
	File string
	// Line is the line in File (0 when unknown).
	Line int
	// Err is what is wrong.
	Err error
}

// Error formats the error as "file:line: message".
func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// KeyLine returns the line of key in the mapping node n, or 0.
func KeyLine(n *yaml.Node, key string) int {
	if n == nil || n.Kind != yaml.MappingNode {
		return 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i].Line
		}
	}
	return 0
}

// DecodeNode decodes n into v (a pointer to a struct with yaml tags) and
// fails on mapping keys v has no field for, except the keys in ignore (at
// the top level). Errors are *ConfigError values naming file and line.
func DecodeNode(file string, n *yaml.Node, v any, ignore ...string) error {
	if err := checkKnown(file, n, reflect.TypeOf(v), ignore); err != nil {
		return err
	}
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			// "line 7: cannot unmarshal ..." → file:7: cannot unmarshal ...
			msg := te.Errors[0]
			line := 0
			if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
				msg = strings.TrimSpace(msg[strings.IndexByte(msg, ':')+1:])
			}
			if line == 0 {
				line = n.Line
			}
			return &ConfigError{File: file, Line: line, Err: errors.New(msg)}
		}
		return &ConfigError{File: file, Line: n.Line, Err: err}
	}
	return nil
}

// checkKnown walks n alongside the type t and reports the first mapping
// key that t has no field for.
func checkKnown(file string, n *yaml.Node, t reflect.Type, ignore []string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[yaml.Node]() {
		return nil // decoded later by its owner
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // n.Decode reports the type mismatch
		}
		fields := map[string]reflect.Type{}
		collectFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				if slices.Contains(ignore, k.Value) {
					continue
				}
				return &ConfigError{File: file, Line: k.Line, Err: fmt.Errorf("unknown field %q (known: %s)", k.Value, strings.Join(sortedKeys(fields), ", "))}
			}
			if err := checkKnown(file, n.Content[i+1], ft, nil); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for _, c := range n.Content {
			if err := checkKnown(file, c, t.Elem(), nil); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 1; i < len(n.Content); i += 2 {
			if err := checkKnown(file, n.Content[i], t.Elem(), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// collectFields maps the yaml names of t's fields (inline structs
// included) to their types.
func collectFields(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, out)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
}

func sortedKeys(m map[string]reflect.Type) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Option adjusts one load of a configuration.
type Option func(*loadOptions)

type loadOptions struct {
	kinds map[string]Factory
}

// WithKind makes kind available to this load only, ahead of the registry:
// a binary that prefers not to register globally passes its moderators
// this way.
func WithKind(kind string, f Factory) Option {
	return func(o *loadOptions) {
		if o.kinds == nil {
			o.kinds = map[string]Factory{}
		}
		o.kinds[kind] = f
	}
}

// MaxNameLen is the longest moderator name, in bytes.
const MaxNameLen = 64

// LoadFile reads a configuration file (YAML, or JSON, which is YAML) and
// builds its chain. Every error names the file and, where it has one, the
// line.
func LoadFile(path string, env Env, opts ...Option) (*Chain, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("moderation: %w", err)
	}
	return Parse(data, path, env, opts...)
}

// Parse builds a chain from the configuration in data; file names it in
// errors and anchors relative paths.
func Parse(data []byte, file string, env Env, opts ...Option) (*Chain, error) {
	var o loadOptions
	for _, opt := range opts {
		opt(&o)
	}
	env.setDefaults()
	specs, err := parseSpecs(data, file)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(specs))
	for _, s := range specs {
		f, ok := lookup(s.Kind, o.kinds)
		if !ok {
			known := Kinds()
			for k := range o.kinds {
				known = append(known, k)
			}
			slices.Sort(known)
			return nil, &ConfigError{File: file, Line: KeyLine(s.node, "kind"), Err: fmt.Errorf("unknown kind %q (known: %s)", s.Kind, strings.Join(known, ", "))}
		}
		m, err := f(s, env)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				err = s.wrap(err)
			}
			return nil, err
		}
		entries = append(entries, Entry{Name: s.Name, Kind: s.Kind, Moderator: m, OnError: s.OnError})
	}
	return NewChain(env.Logger, entries...)
}

// fileConfig is the top level of a configuration file.
type fileConfig struct {
	Moderators []yaml.Node `yaml:"moderators"`
}

// entryCommon is the part of every entry the chain reads.
type entryCommon struct {
	Kind    string `yaml:"kind"`
	Name    string `yaml:"name"`
	OnError string `yaml:"on_error"`
}

func parseSpecs(data []byte, file string) ([]Spec, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file is an empty chain
		}
		return nil, &ConfigError{File: file, Err: fmt.Errorf("yaml: %w", err)}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	var fc fileConfig
	if err := DecodeNode(file, root, &fc); err != nil {
		return nil, err
	}
	seen := map[string]int{}
	specs := make([]Spec, 0, len(fc.Moderators))
	for i := range fc.Moderators {
		n := &fc.Moderators[i]
		if n.Kind != yaml.MappingNode {
			return nil, &ConfigError{File: file, Line: n.Line, Err: errors.New("a moderator entry must be a mapping with a kind")}
		}
		var c entryCommon
		if err := n.Decode(&c); err != nil {
			return nil, &ConfigError{File: file, Line: n.Line, Err: err}
		}
		if c.Kind == "" {
			return nil, &ConfigError{File: file, Line: n.Line, Err: fmt.Errorf("moderator %d has no kind", i+1)}
		}
		s := Spec{Kind: c.Kind, Name: c.Name, File: file, Line: n.Line, node: n}
		if s.Name == "" {
			s.Name = c.Kind
		}
		if err := validName(s.Name); err != nil {
			return nil, &ConfigError{File: file, Line: n.Line, Err: err}
		}
		if prev, dup := seen[s.Name]; dup {
			return nil, &ConfigError{File: file, Line: n.Line, Err: fmt.Errorf("moderator name %q is already used on line %d; give one of them another name", s.Name, prev)}
		}
		seen[s.Name] = n.Line
		switch c.OnError {
		case "", "reject":
			s.OnError = Reject
		case "accept":
			s.OnError = Accept
		default:
			return nil, &ConfigError{File: file, Line: KeyLine(n, "on_error"), Err: fmt.Errorf("on_error is %q; want reject (fail closed) or accept (fail open)", c.OnError)}
		}
		specs = append(specs, s)
	}
	return specs, nil
}

func validName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("moderator name %q is longer than %d bytes", name, MaxNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || r == ',' {
			return fmt.Errorf("moderator name %q may contain only printable characters other than commas", name)
		}
	}
	return nil
}
