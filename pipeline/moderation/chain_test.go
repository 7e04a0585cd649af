package moderation_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/moderation"
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
)

// wait bounds every expected event.
const wait = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// stored is a pipeline.Deliverer that queues every stored message. No test
// here makes the pipeline resync.
type stored chan pipeline.Message

func (s stored) Deliver(m pipeline.Message) { s <- m }

func (s stored) Resync(func(room string) bool) int { return 0 }

// harness is a running pipeline over the memory backend with a chain.
type harness struct {
	p      *pipeline.Pipeline
	be     *memstore.Backend
	stored stored
}

func startPipeline(t *testing.T, c *moderation.Chain) *harness {
	t.Helper()
	be, err := memstore.New(memstore.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{be: be, stored: make(stored, 100)}
	p, err := pipeline.New(pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: be, DeadLetters: be, Logger: quiet, Moderators: c.Moderators()},
		Delivery: pipeline.DeliveryConfig{Feed: be, Deliverer: h.stored, Logger: quiet},
	})
	if err != nil {
		_ = be.Close() // the test is over
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = h.be.Close() // the test is over
	})
	select {
	case <-p.Running():
	case <-time.After(wait):
		t.Fatal("pipeline did not start")
	}
	return h
}

// send submits text as user's to lobby, with the text as its ref, and
// returns its outcome, failing when Submit errs, does not return in time or
// returns an outcome that is not this submission's.
func (h *harness) send(t *testing.T, user, text string) pipeline.Outcome {
	t.Helper()
	type result struct {
		o   pipeline.Outcome
		err error
	}
	res := make(chan result, 1)
	go func() {
		o, err := h.p.Submit(context.Background(), pipeline.Submission{ConnID: "conn-" + user, User: user, Room: "lobby", Text: text, Ref: text})
		res <- result{o, err}
	}()
	var o pipeline.Outcome
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatal(r.err)
		}
		o = r.o
	case <-time.After(wait):
		t.Fatal("no outcome")
	}
	if o.Ref != text || o.Room != "lobby" || o.ID == "" {
		t.Fatalf("outcome = %+v, want ref %q in lobby with an ID", o, text)
	}
	return o
}

// recorder is a test moderator kind: it records what it sees and decides
// by its settings.
type recorder struct {
	name string
	log  *calls
	// rewrite appends this to the text; reject rejects texts containing it.
	Append string `yaml:"append"`
	Reject string `yaml:"reject"`
}

type calls struct {
	mu   sync.Mutex
	seen []string
	meta []map[string]string
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

func (r *recorder) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	r.log.mu.Lock()
	r.log.seen = append(r.log.seen, r.name+":"+m.Text)
	r.log.meta = append(r.log.meta, maps.Clone(m.Metadata))
	r.log.mu.Unlock()
	switch {
	case r.Reject != "" && strings.Contains(m.Text, r.Reject):
		return moderation.Rejected("no " + r.Reject), nil
	case r.Append != "":
		return moderation.Rewritten(m.Text+r.Append, "appended "+r.Append), nil
	}
	return moderation.Accepted(), nil
}

func recorderKind(log *calls) moderation.Option {
	return moderation.WithKind("recorder", func(spec moderation.Spec, _ moderation.Env) (moderation.Moderator, error) {
		r := &recorder{name: spec.Name, log: log}
		if err := spec.Decode(r); err != nil {
			return nil, err
		}
		return r, nil
	})
}

// TestChainOrderFromConfig: the chain runs in the configuration's order,
// each moderator sees the text earlier ones rewrote, the rewrites are noted
// in the metadata, and the stored message has the final text.
func TestChainOrderFromConfig(t *testing.T) {
	log := &calls{}
	cfg := `moderators:
  - kind: recorder
    name: third-in-name
    append: "+1"
  - kind: recorder
    name: first-in-name
    append: "+2"
  - kind: recorder
    name: spy
`
	c, err := moderation.Parse([]byte(cfg), "mod.yaml", moderation.Env{Logger: quiet}, recorderKind(log))
	if err != nil {
		t.Fatal(err)
	}
	h := startPipeline(t, c)
	if o := h.send(t, "alice", "hi"); o.Err != nil {
		t.Fatalf("outcome %+v", o.Err)
	}
	want := []string{"third-in-name:hi", "first-in-name:hi+1", "spy:hi+1+2"}
	if got := log.list(); !slices.Equal(got, want) {
		t.Fatalf("moderators saw %v, want %v", got, want)
	}
	md := log.meta[2]
	if md[moderation.MetaRewrittenBy] != "third-in-name,first-in-name" ||
		md[moderation.MetaRewriteNotes] != "third-in-name: appended +1; first-in-name: appended +2" {
		t.Fatalf("metadata = %v", md)
	}
	select {
	case m := <-h.stored:
		if m.Text != "hi+1+2" {
			t.Fatalf("stored %q, want hi+1+2", m.Text)
		}
	case <-time.After(wait):
		t.Fatal("nothing stored")
	}
	st := c.Stats()
	if st["third-in-name"].Rewritten != 1 || st["spy"].Accepted != 1 || st["spy"].Kind != "recorder" {
		t.Fatalf("stats = %+v", st)
	}
	var names []string
	for _, i := range c.Describe() {
		names = append(names, i.Name)
	}
	if !slices.Equal(names, []string{"third-in-name", "first-in-name", "spy"}) {
		t.Fatalf("describe order = %v", names)
	}
}

// TestRejectionThroughPipeline: a rejection reaches the sender with the
// moderator's name and reason, ends the chain and is dead-lettered; a rate
// limit is refused with retry_after and not dead-lettered.
func TestRejectionThroughPipeline(t *testing.T) {
	log := &calls{}
	limit := moderation.Func(func(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
		if m.User == "flooder" {
			return moderation.RateLimited("slow down", 1500*time.Millisecond), nil
		}
		return moderation.Accepted(), nil
	})
	c, err := moderation.NewChain(quiet,
		moderation.Entry{Name: "limit", Moderator: limit},
		moderation.Entry{Name: "no-spam", Kind: "recorder", Moderator: &recorder{name: "no-spam", log: log, Reject: "spam"}},
		moderation.Entry{Name: "last", Kind: "recorder", Moderator: &recorder{name: "last", log: log}},
	)
	if err != nil {
		t.Fatal(err)
	}
	h := startPipeline(t, c)
	o := h.send(t, "alice", "buy spam")
	if o.Err == nil || o.Err.Code != pipeline.CodeRejected || o.Err.Reason != "no spam" || o.Err.Moderator != "no-spam" {
		t.Fatalf("outcome = %+v, want rejected by no-spam", o.Err)
	}
	if got := log.list(); !slices.Equal(got, []string{"no-spam:buy spam"}) {
		t.Fatalf("moderators saw %v: a rejection ends the chain", got)
	}
	dl := h.be.DeadLetters()
	if len(dl) != 1 || dl[0].Metadata.Get(pipeline.MetaModerator) != "no-spam" || dl[0].Metadata.Get(pipeline.MetaReason) != "no spam" ||
		dl[0].UUID != o.ID || dl[0].Metadata.Get(pipeline.MetaConnID) != "conn-alice" {
		t.Fatalf("dead letters = %v", dl)
	}
	o = h.send(t, "flooder", "hello")
	if o.Err == nil || o.Err.Code != pipeline.CodeRateLimited || o.Err.RetryAfter != 1500*time.Millisecond || o.Err.Moderator != "limit" {
		t.Fatalf("outcome = %+v, want rate_limited by limit", o.Err)
	}
	if n := len(h.be.DeadLetters()); n != 1 {
		t.Fatalf("%d dead letters, want 1: rate limits are not dead-lettered", n)
	}
	st := c.Stats()
	if st["limit"].Accepted != 1 || st["limit"].Rejected != 1 || st["no-spam"].Rejected != 1 || st["last"].Accepted != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestFailClosedThroughPipeline: a moderator that fails closed refuses
// the send with unavailable (try again: it is no verdict on the message),
// its name and a retry hint, and does not dead-letter it; its failures are
// logged once while they last, and once when it works again.
func TestFailClosedThroughPipeline(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	mod := moderation.Func(func(context.Context, *moderation.Message) (moderation.Decision, error) {
		if broken.Load() {
			return moderation.Decision{}, errors.New("webhook down")
		}
		return moderation.Accepted(), nil
	})
	var logs syncbuf.Buffer
	c, err := moderation.NewChain(slog.New(slog.NewTextHandler(&logs, nil)), moderation.Entry{Name: "hook", Moderator: mod, OnError: moderation.Reject})
	if err != nil {
		t.Fatal(err)
	}
	h := startPipeline(t, c)
	for i := range 5 {
		o := h.send(t, "alice", fmt.Sprintf("hello %d", i))
		if o.Err == nil || o.Err.Code != pipeline.CodeUnavailable || o.Err.Moderator != "hook" ||
			o.Err.Reason != moderation.ReasonUnavailable || o.Err.RetryAfter <= 0 {
			t.Fatalf("outcome = %+v, want unavailable by hook with a retry hint", o.Err)
		}
	}
	if n := len(h.be.DeadLetters()); n != 0 {
		t.Fatalf("%d dead letters, want none: a moderator that could not decide gave no verdict", n)
	}
	broken.Store(false)
	if o := h.send(t, "alice", "works again"); o.Err != nil {
		t.Fatalf("outcome = %+v, want stored", o.Err)
	}
	out := logs.String()
	if n := strings.Count(out, "failing"); n != 1 || strings.Count(out, "recovered") != 1 {
		t.Fatalf("log:\n%s\nwant one line when the failures start and one when they end", out)
	}
	if st := c.Stats()["hook"]; st.Errors != 5 || st.Rejected != 5 || st.Accepted != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestOnError: a moderator that fails is counted and its policy decides:
// reject (fail closed, the default) or accept (fail open). A rewrite the
// pipeline would refuse is a failure too.
func TestOnError(t *testing.T) {
	failing := moderation.Func(func(context.Context, *moderation.Message) (moderation.Decision, error) {
		return moderation.Decision{}, errors.New("boom")
	})
	badRewrite := moderation.Func(func(context.Context, *moderation.Message) (moderation.Decision, error) {
		return moderation.Rewritten("  ", ""), nil
	})
	tests := []struct {
		name    string
		mod     moderation.Moderator
		onError moderation.Action
		want    moderation.Action
		reason  string
	}{
		{"fail closed", failing, moderation.Reject, moderation.Reject, moderation.ReasonUnavailable},
		{"fail open", failing, moderation.Accept, moderation.Accept, ""},
		{"blank rewrite fails closed", badRewrite, moderation.Reject, moderation.Reject, moderation.ReasonUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := moderation.NewChain(quiet, moderation.Entry{Name: "m", Moderator: tt.mod, OnError: tt.onError})
			if err != nil {
				t.Fatal(err)
			}
			res := c.Evaluate(context.Background(), moderation.Message{Text: "hi"})
			if res.Action != tt.want || res.Reason != tt.reason {
				t.Fatalf("got %v %q, want %v %q", res.Action, res.Reason, tt.want, tt.reason)
			}
			if st := c.Stats()["m"]; st.Errors != 1 {
				t.Fatalf("stats = %+v, want 1 error", st)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown kind", "moderators:\n  - kind: wordlist\n    words: [a]\n  - kind: nope\n", "mod.yaml:4: unknown kind \"nope\" (known: flood, links, ratelimit, rules, shape, webhook, wordlist)"},
		{"duplicate name", "moderators:\n  - kind: shape\n    max_chars: 5\n  - kind: shape\n    max_lines: 2\n", `mod.yaml:4: moderator name "shape" is already used on line 2`},
		{"bad on_error", "moderators:\n  - kind: shape\n    max_chars: 5\n    on_error: maybe\n", `mod.yaml:4: on_error is "maybe"`},
		{"unknown top-level field", "moderator:\n  - kind: shape\n", `mod.yaml:1: unknown field "moderator"`},
		{"not a mapping", "moderators:\n  - shape\n", "mod.yaml:2: a moderator entry must be a mapping"},
		{"no kind", "moderators:\n  - name: x\n", "mod.yaml:2: moderator 1 has no kind"},
		{"comma in name", "moderators:\n  - kind: shape\n    name: a,b\n    max_chars: 1\n", "may contain only printable characters other than commas"},
		{"wrong type", "moderators:\n  - kind: shape\n    max_chars: many\n", `mod.yaml:3: shape "shape": cannot unmarshal !!str` + " `many` into int"},
		{"wrong nested type", "moderators:\n  - kind: ratelimit\n    per_user: {rate: 5, per: soon}\n", `mod.yaml:3: ratelimit "ratelimit":`},
		{"unknown nested field", "moderators:\n  - kind: ratelimit\n    per_user:\n      rate: 5\n      burts: 5\n", `mod.yaml:5: ratelimit "ratelimit": unknown field "burts"`},
		{"invalid settings", "moderators:\n  - kind: links\n", `mod.yaml:2: links "links": give allow, deny or max_links`},
		{"not yaml", "moderators: [", "mod.yaml: yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := moderation.Parse([]byte(tt.yaml), "mod.yaml", moderation.Env{Logger: quiet})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tt.want)
			}
		})
	}
}

func TestEmptyConfig(t *testing.T) {
	for _, cfg := range []string{"", "moderators: []\n", "# nothing\n"} {
		c, err := moderation.Parse([]byte(cfg), "mod.yaml", moderation.Env{})
		if err != nil || c.Len() != 0 {
			t.Fatalf("%q: %v, %d moderators; want an empty chain", cfg, err, c.Len())
		}
	}
}

func TestRegister(t *testing.T) {
	f := func(moderation.Spec, moderation.Env) (moderation.Moderator, error) {
		return moderation.Func(func(context.Context, *moderation.Message) (moderation.Decision, error) {
			return moderation.Rejected("registered"), nil
		}), nil
	}
	moderation.Register("chain-test-kind", f)
	t.Cleanup(func() { moderation.Unregister("chain-test-kind") })
	if !slices.Contains(moderation.Kinds(), "chain-test-kind") {
		t.Fatalf("kinds = %v", moderation.Kinds())
	}
	c, err := moderation.Parse([]byte("moderators:\n  - kind: chain-test-kind\n"), "", moderation.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res := c.Evaluate(context.Background(), moderation.Message{Text: "x"}); res.Reason != "registered" || res.Moderator != "chain-test-kind" {
		t.Fatalf("got %+v", res)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a kind twice did not panic")
		}
	}()
	moderation.Register("chain-test-kind", f)
}

// reloadable is a moderator with a Run loop and a Reload that can fail.
type reloadable struct {
	moderation.Func
	ran     chan struct{}
	failing bool
}

func (r *reloadable) Run(ctx context.Context) error {
	close(r.ran)
	<-ctx.Done()
	return nil
}

func (r *reloadable) Reload() error {
	if r.failing {
		return errors.New("broken file")
	}
	return nil
}

// TestRunAndReload: Run runs every Runner until ctx is done; Reload reloads
// every Reloader and reports which failed.
func TestRunAndReload(t *testing.T) {
	accept := moderation.Func(func(context.Context, *moderation.Message) (moderation.Decision, error) {
		return moderation.Accepted(), nil
	})
	a := &reloadable{Func: accept, ran: make(chan struct{})}
	b := &reloadable{Func: accept, ran: make(chan struct{}), failing: true}
	c, err := moderation.NewChain(quiet, moderation.Entry{Name: "a", Moderator: a}, moderation.Entry{Name: "b", Moderator: b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for _, r := range []*reloadable{a, b} {
		select {
		case <-r.ran:
		case <-time.After(wait):
			t.Fatal("Run did not start a runner")
		}
	}
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), "moderation: b: broken file") {
		t.Fatalf("reload = %v, want b's error", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
}
