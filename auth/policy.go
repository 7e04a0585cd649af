package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sync/atomic"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"go.yaml.in/yaml/v3"

	"github.com/chatstream/chatstream/pipeline/moderation"
)

// Policy is a rooms policy: ordered rules, each for the rooms a pattern
// matches, whose CEL conditions over user, room and claims say who may
// join and who may send. A file:
//
//	rooms:
//	  - room: announcements            # a room pattern, as in a token's rooms
//	    join: "true"                   # anyone joins (the default)
//	    send: '"admin" in claims.roles'
//	    reason: only admins post announcements
//	  - room: "team-*"
//	    join: has(claims.rooms) && room in claims.rooms   # send: the same as join
//	  - room: "*"
//
// The first rule whose pattern matches the room decides; a room no rule
// matches is refused (end with room: "*" to allow the rest). Conditions
// see user (string), room (string) and claims (the token's claims, a map;
// empty with --auth none). A condition that fails at run time (a missing
// claim, say) refuses, and is logged once per rule. It is safe for
// concurrent use.
type Policy struct {
	file  string
	rules []*policyRule
	log   *slog.Logger
}

type policyRule struct {
	pattern    string
	line       int
	reason     string
	join, send cel.Program
	// warned is set once a runtime error of the rule has been logged.
	warned atomic.Bool
}

type policySpec struct {
	Room   string `yaml:"room"`
	Join   string `yaml:"join"`
	Send   string `yaml:"send"`
	Reason string `yaml:"reason"`
}

type policyFile struct {
	Rooms yaml.Node `yaml:"rooms"`
}

// LoadPolicy reads and compiles a rooms policy file. Its errors name the
// file and line: "policy.yaml:7: rule 2: join: undeclared reference to 'rom'".
func LoadPolicy(file string, log *slog.Logger) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth: rooms policy: %w", err)
	}
	return ParsePolicy(data, file, log)
}

// ParsePolicy compiles the rooms policy data; file names it in errors.
func ParsePolicy(data []byte, file string, log *slog.Logger) (*Policy, error) {
	if log == nil {
		log = slog.Default()
	}
	env, err := cel.NewEnv(
		cel.Variable("user", cel.StringType),
		cel.Variable("room", cel.StringType),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("auth: rooms policy: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &moderation.ConfigError{File: file, Err: errors.New("the rooms policy is empty; it needs rooms: a list of rules")}
		}
		return nil, &moderation.ConfigError{File: file, Err: fmt.Errorf("yaml: %w", err)}
	}
	var pf policyFile
	if err := moderation.DecodeNode(file, doc.Content[0], &pf); err != nil {
		return nil, err
	}
	if pf.Rooms.Kind != yaml.SequenceNode || len(pf.Rooms.Content) == 0 {
		line := pf.Rooms.Line
		if line == 0 {
			line = doc.Content[0].Line
		}
		return nil, &moderation.ConfigError{File: file, Line: line, Err: errors.New("rooms must be a list of rules")}
	}
	p := &Policy{file: file, log: log}
	for i, n := range pf.Rooms.Content {
		r, err := compilePolicyRule(env, n, file, i+1)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func compilePolicyRule(env *cel.Env, n *yaml.Node, file string, index int) (*policyRule, error) {
	var s policySpec
	if err := moderation.DecodeNode(file, n, &s); err != nil {
		return nil, err
	}
	fail := func(key, format string, args ...any) error {
		line := n.Line
		if l := moderation.KeyLine(n, key); l > 0 {
			line = l
		}
		return &moderation.ConfigError{File: file, Line: line, Err: fmt.Errorf("rule %d: %s", index, fmt.Sprintf(format, args...))}
	}
	if s.Room == "" {
		return nil, fail("", "room is missing: a room pattern such as lobby or team-*")
	}
	if _, err := path.Match(s.Room, ""); err != nil {
		return nil, fail("room", "room pattern %q: %v", s.Room, err)
	}
	if s.Join == "" {
		s.Join = "true"
	}
	r := &policyRule{pattern: s.Room, line: n.Line, reason: s.Reason}
	var err error
	if r.join, err = compileCondition(env, s.Join, valueOf(n, "join"), file, index, "join"); err != nil {
		return nil, err
	}
	r.send = r.join
	if s.Send != "" {
		if r.send, err = compileCondition(env, s.Send, valueOf(n, "send"), file, index, "send"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// valueOf returns the value node of key in the mapping n, or n.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return n
}

// compileCondition compiles a condition written at node v and reports its
// errors at their line, as the moderation rules do.
func compileCondition(env *cel.Env, src string, v *yaml.Node, file string, index int, field string) (cel.Program, error) {
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		e := iss.Errors()[0]
		line, msg := v.Line, e.Message
		if v.Style == yaml.LiteralStyle || v.Style == yaml.FoldedStyle {
			line++ // a block scalar starts on the line after its indicator
		}
		if loc := e.Location; loc != nil && loc.Line() > 0 {
			line += loc.Line() - 1
			msg += fmt.Sprintf(" (at %d:%d of the expression)", loc.Line(), loc.Column()+1)
		}
		return nil, &moderation.ConfigError{File: file, Line: line, Err: fmt.Errorf("rule %d: %s: %s", index, field, msg)}
	}
	if out := ast.OutputType(); !out.IsExactType(cel.BoolType) && !out.IsExactType(cel.DynType) {
		return nil, &moderation.ConfigError{File: file, Line: v.Line, Err: fmt.Errorf("rule %d: %s must be of type bool, not %s", index, field, out)}
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, &moderation.ConfigError{File: file, Line: v.Line, Err: fmt.Errorf("rule %d: %s: %w", index, field, err)}
	}
	return prg, nil
}

// Allow reports whether id may do act in room under the policy. The error
// wraps ErrForbidden and gives the rule's reason.
func (p *Policy) Allow(id Identity, room string, act Action) error {
	for _, r := range p.rules {
		if ok, _ := path.Match(r.pattern, room); !ok { // checked at load
			continue
		}
		prg := r.join
		if act == Send {
			prg = r.send
		}
		claims := id.Claims
		if claims == nil {
			claims = map[string]any{}
		}
		out, _, err := prg.Eval(map[string]any{"user": id.User, "room": room, "claims": claims})
		if err == nil {
			if b, isBool := out.(types.Bool); isBool && bool(b) {
				return nil
			}
		} else if !r.warned.Swap(true) {
			p.log.Warn("auth: a rooms policy condition failed; it refuses (logged once per rule)",
				"file", p.file, "line", r.line, "room", room, "user", id.User, "action", act.String(), "err", err)
		}
		reason := r.reason
		if reason == "" {
			reason = fmt.Sprintf("the rooms policy does not allow you to %s room %s", act, room)
		}
		return fmt.Errorf("%w: %s", ErrForbidden, reason)
	}
	return fmt.Errorf("%w: the rooms policy has no rule for room %s", ErrForbidden, room)
}
