package dryrun_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin" // the kinds the config names
	"github.com/chatstream/chatstream/pipeline/moderation/dryrun"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

var quiet = slog.New(slog.DiscardHandler)

// config is the chain the tests replay traffic through.
const config = `moderators:
  - kind: wordlist
    name: profanity
    words: [darn]
  - kind: rules
    name: spam
    rules:
      - name: crypto
        when: text.matches("(?i)free\\s+crypto")
        action: reject
        reason: no crypto offers
  - kind: flood
    max_repeats: 1
`

// fixture is a Redis with traffic recorded by the redisstore backend.
type fixture struct {
	rs *testredis.Server
	b  *redisstore.Backend
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rs := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &fixture{rs: rs, b: b}
}

// append stores a message as the pipeline would.
func (f *fixture) append(t *testing.T, room, user, text string) {
	t.Helper()
	m := message.NewMessage(fmt.Sprintf("%s-%d", user, time.Now().UnixNano()), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "conn-"+user)
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := f.b.Append(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// seed records the traffic the tests replay.
func (f *fixture) seed(t *testing.T) {
	t.Helper()
	for _, m := range [][3]string{
		{"lobby", "alice", "hello"},
		{"lobby", "bob", "FREE  crypto now"},
		{"general", "dave", "hi there"},
		{"lobby", "alice", "well darn it"},
		{"lobby", "carol", "again"},
		{"lobby", "carol", "AGAIN!"},
	} {
		f.append(t, m[0], m[1], m[2])
		// Rooms have streams of their own, whose IDs are ordered only by
		// their millisecond: keep the messages a millisecond apart.
		time.Sleep(2 * time.Millisecond)
	}
}

// allRooms lists every room with a stream, as --all-rooms does.
func (f *fixture) allRooms(t *testing.T) []string {
	t.Helper()
	rooms, err := f.b.Rooms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rooms
}

// run dry-runs config (a fresh chain, as each command run loads one) over
// the last hour of rooms, read two entries per XRANGE.
func (f *fixture) run(t *testing.T, rooms []string, cfg dryrun.Config, q replay.Query) (string, dryrun.Summary, error) {
	t.Helper()
	chain, err := moderation.Parse([]byte(config), "mod.yaml", moderation.Env{Logger: quiet, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	rng, err := replay.ParseRange("1h", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	q.Rooms, q.Range = rooms, rng
	var out bytes.Buffer
	cfg.Chain, cfg.Out = chain, &out
	reader := replay.NewReader(f.b, replay.Config{PageSize: 2, Logger: quiet})
	sum, err := dryrun.Run(context.Background(), reader, q, cfg)
	return out.String(), sum, err
}

// TestRun replays seeded traffic and checks the decisions, the summary,
// and that nothing was written to Redis.
func TestRun(t *testing.T) {
	f := newFixture(t)
	f.seed(t)
	rc := f.rs.Client()
	ctx := context.Background()
	keysBefore, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}

	out, _, err := f.run(t, []string{"lobby"}, dryrun.Config{Width: 60}, replay.Query{})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantRows := [][]string{
		{"TIME", "ROOM", "USER", "DECISION", "MODERATOR", "REASON / REWRITE", "TEXT"},
		{"lobby", "alice", "accept", "-", "-", "hello"},
		{"lobby", "bob", "reject", "spam/crypto", "no crypto offers", "FREE  crypto now"},
		{"lobby", "alice", "rewrite", "profanity", "→ well **** it", "well darn it"},
		{"lobby", "carol", "accept", "-", "-", "again"},
		{"lobby", "carol", "reject", "flood", "already sent this message", "AGAIN!"},
	}
	for i, want := range wantRows {
		if i >= len(lines) {
			t.Fatalf("output has %d lines:\n%s", len(lines), out)
		}
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
	for _, w := range []string{
		"5 messages in 1 rooms: 2 accepted, 2 rejected, 1 rewritten",
		"profanity wordlist 4 0 1 0",
		"spam rules 4 1 0 0",
		"rule crypto - 1 0 0",
		"flood flood 3 1 0 0",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "dave") {
		t.Error("a message of another room was replayed")
	}

	// Every room is merged in time order.
	out, _, err = f.run(t, f.allRooms(t), dryrun.Config{Width: 60}, replay.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if i, j := strings.Index(out, "bob"), strings.Index(out, "dave"); i < 0 || j < i || strings.Index(out, "well darn") < j {
		t.Errorf("every room is not in time order:\n%s", out)
	}
	if !strings.Contains(out, "6 messages in 2 rooms") {
		t.Errorf("every room's summary:\n%s", out)
	}

	keysAfter, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keysAfter) != len(keysBefore) {
		t.Fatalf("keys before %v, after %v: the dry run wrote to Redis", keysBefore, keysAfter)
	}
}

// TestRunJSON checks JSON output: one object per message and a summary
// object.
func TestRunJSON(t *testing.T) {
	f := newFixture(t)
	f.seed(t)
	out, _, err := f.run(t, []string{"lobby"}, dryrun.Config{JSON: true, Width: 60}, replay.Query{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []dryrun.Decision
	var sum dryrun.Summary
	for line := range strings.Lines(out) {
		var probe struct{ Type string }
		if err := json.Unmarshal([]byte(line), &probe); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		switch probe.Type {
		case "message":
			var m dryrun.Decision
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		case "summary":
			if err := json.Unmarshal([]byte(line), &sum); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unknown line %q", line)
		}
	}
	if len(msgs) != 5 {
		t.Fatalf("%d message lines, want 5:\n%s", len(msgs), out)
	}
	if m := msgs[1]; m.Decision != "reject" || m.Code != pipeline.CodeRejected || m.Moderator != "spam" || m.Rule != "crypto" || m.Reason != "no crypto offers" || m.Text != "FREE  crypto now" {
		t.Errorf("message 1 = %+v", m)
	}
	if m := msgs[2]; m.Decision != "rewrite" || m.Rewritten != "well **** it" || m.Moderator != "profanity" || !strings.Contains(m.Notes, "masked 1 word") {
		t.Errorf("message 2 = %+v", m)
	}
	if sum.Messages != 5 || sum.Accepted != 2 || sum.Rejected != 2 || sum.Rewritten != 1 || len(sum.Moderators) != 3 {
		t.Fatalf("summary = %+v", sum)
	}
	if spam := sum.Moderators[1]; spam.Name != "spam" || len(spam.Rules) != 1 || spam.Rules[0].Name != "crypto" || spam.Rules[0].Rejected != 1 {
		t.Errorf("spam summary = %+v", spam)
	}
}

// TestRunOutput covers what the table and the summary show besides the
// decisions: truncated texts, skipped entries, no room at all, and the
// summary Run returns.
func TestRunOutput(t *testing.T) {
	f := newFixture(t)
	f.seed(t)
	f.append(t, "lobby", "erin", "two\nlines\tand a tab")
	// An entry in another layout, which the dry run skips and counts.
	err := f.rs.Client().XAdd(context.Background(), &redis.XAddArgs{Stream: f.b.Keys().Room("lobby"), Values: map[string]any{"garbage": "x"}}).Err()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		rooms   []string
		cfg     dryrun.Config
		want    []string // in the output, spacing aside
		wantSum dryrun.Summary
	}{
		{
			name:  "width and skipped entries",
			rooms: []string{"lobby"},
			cfg:   dryrun.Config{Width: 10, Since: "1-0", Until: "2-0"},
			want: []string{
				"FREE  cry…", "no crypto…", "→ well ****…", "two⏎lines…",
				"6 messages in 1 rooms: 3 accepted, 2 rejected, 1 rewritten (1 undecodable entries skipped)",
			},
			wantSum: dryrun.Summary{Type: "summary", Rooms: []string{"lobby"}, Since: "1-0", Until: "2-0", Messages: 6, Accepted: 3, Rejected: 2, Rewritten: 1, Undecodable: 1},
		},
		{
			name:    "whole texts",
			rooms:   []string{"lobby"},
			want:    []string{"two⏎lines and a tab", "you have already sent this message several times; please do not repeat yourself"},
			wantSum: dryrun.Summary{Type: "summary", Rooms: []string{"lobby"}, Messages: 6, Accepted: 3, Rejected: 2, Rewritten: 1, Undecodable: 1},
		},
		{
			name:    "no room",
			want:    []string{"TIME ROOM USER", "0 messages in 0 rooms: 0 accepted, 0 rejected, 0 rewritten", "profanity wordlist 0 0 0 0"},
			wantSum: dryrun.Summary{Type: "summary"},
		},
		{
			name:    "no room in JSON",
			cfg:     dryrun.Config{JSON: true, Since: "-", Until: "5"},
			want:    []string{`{"type":"summary","rooms":null,"since":"-","until":"5","messages":0,`, `"moderators":[{"name":"profanity","kind":"wordlist","accepted":0,`},
			wantSum: dryrun.Summary{Type: "summary", Since: "-", Until: "5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skipped := 0
			out, sum, err := f.run(t, tt.rooms, tt.cfg, replay.Query{Skipped: func(string, error) { skipped++ }})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(w), " ")) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if skipped != int(tt.wantSum.Undecodable) {
				t.Errorf("Skipped called %d times, want %d", skipped, tt.wantSum.Undecodable)
			}
			if len(sum.Moderators) != 3 {
				t.Errorf("summary has %d moderators, want 3", len(sum.Moderators))
			}
			sum.Moderators = nil
			if got, want := fmt.Sprintf("%+v", sum), fmt.Sprintf("%+v", tt.wantSum); got != want {
				t.Errorf("summary = %s, want %s", got, want)
			}
		})
	}
}

// TestRunReadError: an error of the read is returned as the reader
// returned it, so that callers can match it.
func TestRunReadError(t *testing.T) {
	f := newFixture(t)
	f.seed(t)
	out, _, err := f.run(t, []string{"lobby", "nowhere"}, dryrun.Config{}, replay.Query{})
	if !errors.Is(err, replay.ErrUnknownRoom) {
		t.Fatalf("err = %v, want replay.ErrUnknownRoom", err)
	}
	if strings.Contains(out, "messages in") {
		t.Errorf("a failed run printed a summary:\n%s", out)
	}
}
