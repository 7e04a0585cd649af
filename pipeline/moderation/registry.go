package moderation

import (
	"slices"
	"sync"
)

// Factory builds a moderator of one kind from its entry in a configuration
// file. It decodes its settings with spec.Decode and reports bad settings
// with spec.Errorf, so the message names the file and line.
type Factory func(spec Spec, env Env) (Moderator, error)

// registry maps kinds to factories. It is the documented exception to "no
// package-level mutable state": kinds register themselves from init
// functions, like database/sql drivers, so a custom binary adds a kind with a
// blank import. mu guards kinds.
var registry struct {
	mu    sync.RWMutex
	kinds map[string]Factory
}

// Register makes a kind available to every configuration file loaded
// afterwards. It panics when kind is empty, f is nil or kind is already
// registered; call it from an init function.
func Register(kind string, f Factory) {
	if kind == "" || f == nil {
		panic("moderation: Register with an empty kind or a nil factory")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.kinds == nil {
		registry.kinds = map[string]Factory{}
	}
	if _, dup := registry.kinds[kind]; dup {
		panic("moderation: Register called twice for kind " + kind)
	}
	registry.kinds[kind] = f
}

// Kinds returns the registered kinds, sorted.
func Kinds() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := make([]string, 0, len(registry.kinds))
	for k := range registry.kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func lookup(kind string, extra map[string]Factory) (Factory, bool) {
	if f, ok := extra[kind]; ok {
		return f, true
	}
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	f, ok := registry.kinds[kind]
	return f, ok
}

// Validator is a kind's configuration that can check itself.
type Validator interface {
	Validate() error
}

// Configured returns the Factory most kinds need: it decodes an entry's
// settings into a C (unknown fields are errors with their line), checks
// them with C's Validate (errors name the entry's line), and builds the
// moderator with build, which may take what it needs from spec and env.
func Configured[C Validator, M Moderator](build func(spec Spec, env Env, cfg C) (M, error)) Factory {
	return func(spec Spec, env Env) (Moderator, error) {
		var cfg C
		if err := spec.Decode(&cfg); err != nil {
			return nil, err
		}
		if err := cfg.Validate(); err != nil {
			return nil, spec.Errorf("", "%w", err)
		}
		m, err := build(spec, env, cfg)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}
