package rules_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/rules"
)

const sample = `rules:
  - name: crypto-spam
    when: text.matches("(?i)free\\s+crypto") && room == "lobby"
    action: reject
    reason: no crypto offers in the lobby
  - name: vip-only
    when: room == "vip" && metadata["role"] != "vip"
    action: reject
    reason: members only
  - name: phone
    action: mask
    pattern: '\d{3}-\d{4}'
  - name: shouting
    when: size(text) > 10 && text.upperAscii() == text
    action: rewrite
    text: text.lowerAscii()
    note: lowered
  - name: scam-word
    when: containsWord(text, "scam")
    action: reject
    reason: no scams
  - name: shorteners
    when: domains(text).exists(d, d == "bit.ly")
    action: reject
    reason: no link shorteners
  - name: normalized
    when: normalize(text).contains("buy now")
    action: rewrite
    text: mask(text, "(?i)buy")
`

// write replaces dir/name with data atomically (a temporary file renamed
// over it), as deployment tools do: a watcher polling every few
// milliseconds on a loaded machine could otherwise see the file truncated
// but not yet written for longer than its debounce.
func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func newRules(t *testing.T, file string, poll time.Duration) *rules.Rules {
	t.Helper()
	r, err := rules.New(rules.Config{File: file, Poll: poll, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEvaluate(t *testing.T) {
	r := newRules(t, write(t, t.TempDir(), "rules.yaml", sample), -1)
	tests := []struct {
		name   string
		room   string
		meta   map[string]string
		text   string
		action moderation.Action
		rule   string
		want   string // reason or new text
	}{
		{"accept", "lobby", nil, "hello there", moderation.Accept, "", ""},
		{"regex and room", "lobby", nil, "FREE   crypto for all", moderation.Reject, "crypto-spam", "no crypto offers in the lobby"},
		{"other room", "general", nil, "free crypto", moderation.Accept, "", ""},
		{"metadata", "vip", map[string]string{"role": "guest"}, "hi", moderation.Reject, "vip-only", "members only"},
		{"metadata match", "vip", map[string]string{"role": "vip"}, "hi", moderation.Accept, "", ""},
		{"missing metadata key is a runtime error: rule skipped", "vip", nil, "hi", moderation.Accept, "", ""},
		{"mask", "general", nil, "call 555-1234 now", moderation.Rewrite, "phone", "call ******** now"},
		{"rewrite", "general", nil, "STOP THAT NOW", moderation.Rewrite, "shouting", "stop that now"},
		{"rewrites chain", "general", nil, "CALL 555-1234 NOW", moderation.Rewrite, "phone,shouting", "call ******** now"},
		{"containsWord folds", "general", nil, "what a 5c4m", moderation.Reject, "scam-word", "no scams"},
		{"containsWord whole words", "general", nil, "scampi", moderation.Accept, "", ""},
		{"domains", "general", nil, "see bit.ly/x", moderation.Reject, "shorteners", "no link shorteners"},
		{"normalize and mask()", "general", nil, "BUY, now!", moderation.Rewrite, "normalized", "***, now!"},
		{"a reject after a rewrite wins", "general", nil, "555-1234 scam", moderation.Reject, "scam-word", "no scams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := r.Moderate(context.Background(), &moderation.Message{Room: tt.room, User: "alice", Text: tt.text, Metadata: tt.meta})
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != tt.action || d.Rule != tt.rule {
				t.Fatalf("%q: got %v by %q (%q %q), want %v by %q", tt.text, d.Action, d.Rule, d.Reason, d.Text, tt.action, tt.rule)
			}
			got := d.Reason
			if d.Action == moderation.Rewrite {
				got = d.Text
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	st := r.RuleStats()
	if st["vip-only"].Errors != 1 || st["crypto-spam"].Rejected != 1 || st["phone"].Rewritten != 3 {
		t.Errorf("rule stats = %+v", st)
	}
}

// TestCompileErrors: a broken rule is reported with its line in the file
// and the reason.
func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"undeclared variable", "rules:\n  - name: a\n    when: txt == \"x\"\n    action: reject\n", `rules.yaml:3: rule "a": when: undeclared reference to 'txt'`},
		{"syntax error", "rules:\n  - name: ok\n    when: room == \"a\"\n    action: reject\n  - name: b\n    when: text ==\n    action: reject\n", `rules.yaml:6: rule "b": when: Syntax error`},
		{"error on a later line of a block", "rules:\n  - name: c\n    when: |\n      room == \"a\" &&\n      nosuch(text)\n    action: reject\n", `rules.yaml:5: rule "c": when: undeclared reference to 'nosuch'`},
		{"not a bool", "rules:\n  - name: d\n    when: text\n    action: reject\n", `rules.yaml:3: rule "d": when must be of type bool, not string`},
		{"text not a string", "rules:\n  - name: e\n    when: true\n    action: rewrite\n    text: size(text)\n", `rules.yaml:5: rule "e": text must be of type string, not int`},
		{"bad constant regex", "rules:\n  - name: f\n    when: text.matches(\"(\")\n    action: reject\n", `rules.yaml:3: rule "f": when:`},
		{"bad mask pattern", "rules:\n  - name: g\n    action: mask\n    pattern: \"[\"\n", `rules.yaml:4: rule "g": pattern:`},
		{"unknown action", "rules:\n  - name: h\n    when: true\n    action: ban\n", `rules.yaml:4: rule "h": action is "ban"`},
		{"missing when", "rules:\n  - name: i\n    action: reject\n", `rules.yaml:2: rule "i": when is missing`},
		{"unknown field", "rules:\n  - name: j\n    wen: true\n    action: reject\n", `rules.yaml:3: unknown field "wen"`},
		{"duplicate name", "rules:\n  - name: k\n    when: true\n    action: reject\n  - name: k\n    when: false\n    action: reject\n", `rules.yaml:5: rule name "k" is already used on line 2`},
		{"not yaml", "rules: [\n", `rules.yaml: yaml:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rules.Check([]byte(tt.file), "rules.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tt.want)
			}
		})
	}
}

// TestReloadKeepsOldRulesOnError: Reload swaps in a good file and keeps the
// rules in force when the new file is broken.
func TestReloadKeepsOldRulesOnError(t *testing.T) {
	dir := t.TempDir()
	file := write(t, dir, "rules.yaml", "rules:\n  - name: a\n    when: text == \"a\"\n    action: reject\n")
	r := newRules(t, file, -1)
	rejects := func(text string) bool {
		d, err := r.Moderate(context.Background(), &moderation.Message{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return d.Action == moderation.Reject
	}
	if !rejects("a") || rejects("b") {
		t.Fatal("initial rules not in force")
	}
	write(t, dir, "rules.yaml", "rules:\n  - name: b\n    when: text == \"b\"\n    action: reject\n")
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if rejects("a") || !rejects("b") {
		t.Fatal("reloaded rules not in force")
	}
	write(t, dir, "rules.yaml", "rules:\n  - name: c\n    when: text = \"c\"\n    action: reject\n")
	err := r.Reload()
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:3:") {
		t.Fatalf("reload of a broken file: %v, want an error at line 3", err)
	}
	if !rejects("b") || rejects("c") {
		t.Fatal("a failed reload did not keep the old rules")
	}
}

// TestWatchReloads: Run polls the file and reloads it on change, keeping
// the old rules when the change is broken, and stops with its context.
func TestWatchReloads(t *testing.T) {
	dir := t.TempDir()
	file := write(t, dir, "rules.yaml", "rules:\n  - name: a\n    when: text == \"a\"\n    action: reject\n")
	r := newRules(t, file, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	rejects := func(text string) bool {
		d, _ := r.Moderate(context.Background(), &moderation.Message{Text: text})
		return d.Action == moderation.Reject
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	write(t, dir, "rules.yaml", "rules:\n  - name: b\n    when: text == \"bb\"\n    action: reject\n")
	eventually("the changed file was not reloaded", func() bool { return rejects("bb") })
	write(t, dir, "rules.yaml", "rules:\n  - name: c\n    when: nonsense(\n    action: reject\n")
	time.Sleep(100 * time.Millisecond) // several polls
	if !rejects("bb") {
		t.Fatal("a broken file replaced the rules in force")
	}
}

// TestInlineRules: rules written in the chain's configuration file report
// errors at their line in that file.
func TestInlineRules(t *testing.T) {
	cfg := "moderators:\n  - kind: rules\n    rules:\n      - name: x\n        when: text == \"x\"\n        action: reject\n"
	c, err := moderation.Parse([]byte(cfg), "mod.yaml", moderation.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res := c.Evaluate(context.Background(), moderation.Message{Text: "x"}); res.Action != moderation.Reject || res.Rule != "x" {
		t.Fatalf("got %+v", res)
	}
	broken := strings.Replace(cfg, `text == "x"`, `text == `, 1)
	_, err = moderation.Parse([]byte(broken), "mod.yaml", moderation.Env{})
	if err == nil || !strings.HasPrefix(err.Error(), `mod.yaml:5: rule "x": when:`) {
		t.Fatalf("got %v, want an error at mod.yaml:5", err)
	}
}
