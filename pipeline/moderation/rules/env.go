package rules

import (
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"

	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

// newEnv returns the CEL environment of rules: the message's variables,
// the strings extension and chatstream's helpers.
func newEnv(res *regexCache) (*cel.Env, error) {
	str := func(f func(string) ref.Val) func(ref.Val) ref.Val {
		return func(v ref.Val) ref.Val {
			s, ok := v.(types.String)
			if !ok {
				return types.NewErr("want a string, got %s", v.Type())
			}
			return f(string(s))
		}
	}
	strList := func(xs []string) ref.Val { return types.NewStringList(types.DefaultTypeAdapter, xs) }
	return cel.NewEnv(
		cel.Variable("room", cel.StringType),
		cel.Variable("user", cel.StringType),
		cel.Variable("conn_id", cel.StringType),
		cel.Variable("text", cel.StringType),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
		ext.Strings(),
		cel.Function("normalize", cel.Overload("normalize_string", []*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(str(func(s string) ref.Val { return types.String(textnorm.Normalize(s)) })))),
		cel.Function("words", cel.Overload("words_string", []*cel.Type{cel.StringType}, cel.ListType(cel.StringType),
			cel.UnaryBinding(str(func(s string) ref.Val { return strList(textnorm.FoldWords(s)) })))),
		cel.Function("domains", cel.Overload("domains_string", []*cel.Type{cel.StringType}, cel.ListType(cel.StringType),
			cel.UnaryBinding(str(func(s string) ref.Val {
				links := textnorm.Links(s)
				hosts := make([]string, len(links))
				for i, l := range links {
					hosts[i] = l.Host
				}
				return strList(hosts)
			})))),
		cel.Function("containsWord", cel.Overload("containsWord_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(func(a, b ref.Val) ref.Val {
				s, ok1 := a.(types.String)
				w, ok2 := b.(types.String)
				if !ok1 || !ok2 {
					return types.NewErr("containsWord wants two strings")
				}
				return types.Bool(containsWord(string(s), string(w)))
			}))),
		cel.Function("mask", cel.Overload("mask_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.StringType,
			cel.BinaryBinding(func(a, b ref.Val) ref.Val {
				s, ok1 := a.(types.String)
				p, ok2 := b.(types.String)
				if !ok1 || !ok2 {
					return types.NewErr("mask wants two strings")
				}
				m, err := res.get(string(p))
				if err != nil {
					return types.NewErr("mask: %v", err)
				}
				return types.String(m.mask(string(s)))
			}))),
	)
}

// containsWord reports whether the folded words of s contain the folded
// words of w in a row.
func containsWord(s, w string) bool {
	want := textnorm.FoldWords(w)
	switch len(want) {
	case 0:
		return false
	case 1: // the common case, without allocating
		var buf []byte
		for sp := range textnorm.Words(s) {
			buf = textnorm.AppendFold(buf[:0], s[sp.Start:sp.End])
			if string(buf) == want[0] {
				return true
			}
		}
		return false
	}
	have := textnorm.FoldWords(s)
outer:
	for i := 0; i+len(want) <= len(have); i++ {
		for j := range want {
			if have[i+j] != want[j] {
				continue outer
			}
		}
		return true
	}
	return false
}

// maxCachedRegexps bounds regexCache; patterns beyond it are compiled on
// each use.
const maxCachedRegexps = 256

// regexCache keeps the compiled patterns of mask() calls.
type regexCache struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]*matcher
}

func newRegexCache() *regexCache { return &regexCache{m: map[string]*matcher{}} }

func (c *regexCache) get(p string) (*matcher, error) {
	c.mu.Lock()
	re, ok := c.m[p]
	c.mu.Unlock()
	if ok {
		return re, nil
	}
	re, err := compileMatcher(p)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %s", p, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	c.mu.Lock()
	if len(c.m) < maxCachedRegexps {
		c.m[p] = re
	}
	c.mu.Unlock()
	return re, nil
}
