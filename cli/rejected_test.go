package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// deadLetter stores a rejected message in the dead-letter stream and
// returns its entry ID.
func (f *toolFixture) deadLetter(t *testing.T, room, user, text, moderator string) string {
	t.Helper()
	return f.deadLetterRef(t, room, user, text, moderator, "")
}

// deadLetterRef is deadLetter for a message sent with a client ref.
func (f *toolFixture) deadLetterRef(t *testing.T, room, user, text, moderator, ref string) string {
	t.Helper()
	m := message.NewMessage("dl-"+text, []byte(text))
	if ref != "" {
		m.Metadata.Set(pipeline.MetaRef, ref)
	}
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(pipeline.MetaCode, pipeline.CodeRejected)
	m.Metadata.Set(pipeline.MetaReason, "looks like "+text)
	m.Metadata.Set(pipeline.MetaModerator, moderator)
	ctx := context.Background()
	if err := f.b.DeadLetter(ctx, m); err != nil {
		t.Fatal(err)
	}
	xs, err := f.b.Client().XRevRangeN(ctx, f.b.Keys().Rejected(), "+", "-", 1).Result()
	if err != nil || len(xs) != 1 {
		t.Fatalf("dead letter: %v %v", xs, err)
	}
	return xs[0].ID
}

// TestRejectedCommand: the listing with its filter, a requeue by ID and a
// requeue of everything listed, each checked in the room stream.
func TestRejectedCommand(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	f.seed(t, "lobby", "alice", "hi", time.Now())
	first := f.deadLetter(t, "lobby", "eve", "spam", "words")
	second := f.deadLetter(t, "dev", "mallory", "flood", "rate")
	third := f.deadLetter(t, "lobby", "eve", "ads", "words")

	t.Run("list", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := rejectedCmd{Conn: f.flags(), Moderator: "words", Format: "text"}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], " "+first+" lobby eve rejected by words: \"looks like spam\": spam") ||
			!strings.Contains(lines[1], " "+third+" ") {
			t.Fatalf("listing %q", out)
		}
	})

	t.Run("requeue by ID", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := rejectedCmd{Conn: f.flags(), Requeue: []string{second}, Format: "jsonl", NoModeration: true}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		var res replay.Result
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil || res.From != second || res.Room != "dev" || res.Seq == "" || res.Error != nil {
			t.Fatalf("result %q (%v)", out, err)
		}
		if got := roomMessages(t, f, "dev"); len(got) != 1 || got[0].ID != res.Seq || got[0].Meta[replay.MetaRequeuedFrom] != second || got[0].User != "mallory" {
			t.Fatalf("dev = %+v", got)
		}
	})

	t.Run("requeue all listed", func(t *testing.T) {
		tio, out, errs := bufferIO()
		c := rejectedCmd{Conn: f.flags(), Moderator: "words", RequeueAll: true, Format: "text", NoModeration: true}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], first+" -> lobby/") || !strings.HasPrefix(lines[1], third+" -> lobby/") ||
			!strings.Contains(errs.String(), "requeued 2 of 2") {
			t.Fatalf("stdout %q stderr %q", out, errs)
		}
		got := roomMessages(t, f, "lobby")
		if len(got) != 3 || got[1].Text != "spam" || got[1].Meta[replay.MetaRequeuedFrom] != first || got[2].Meta[replay.MetaRequeuedFrom] != third {
			t.Fatalf("lobby = %+v", got)
		}
	})
}

// TestRequeueModerated: with --moderation, a requeued message passes the
// configured chain; one rejected again is reported, dead-lettered again,
// and the run exits with exitRefused. A bad file is a usage error.
func TestRequeueModerated(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	id := f.deadLetter(t, "lobby", "eve", "buy spam now", "words")
	dir := t.TempDir()
	conf := filepath.Join(dir, "moderation.yaml")
	if err := os.WriteFile(conf, []byte("moderators:\n  - kind: wordlist\n    name: words\n    action: reject\n    reason: no spam\n    words: [spam]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("moderators:\n  - kind: nosuchkind\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tio, out, _ := bufferIO()
	c := rejectedCmd{Conn: f.flags(), Requeue: []string{id}, Format: "jsonl", Moderation: conf}
	err := c.run(context.Background(), tio)
	if exitCode(err) != exitRefused {
		t.Fatalf("err %v (exit %d), want exit %d", err, exitCode(err), exitRefused)
	}
	var res replay.Result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil || res.Error == nil || res.Error.Moderator != "words" || res.Error.Reason != "no spam" {
		t.Fatalf("result %q (%v)", out, err)
	}
	tio, out, _ = bufferIO()
	list := rejectedCmd{Conn: f.flags(), Format: "jsonl"}
	if err := list.run(context.Background(), tio); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var again replay.RejectedRecord
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &again); err != nil || len(lines) != 2 || again.Meta[replay.MetaRequeuedFrom] != id || again.Reason != "no spam" {
		t.Fatalf("dead letters %q (%v)", out, err)
	}
	c.Moderation = bad
	if err := c.run(context.Background(), tio); exitCode(err) != exitUsage {
		t.Fatalf("bad moderation file: %v (exit %d), want exit %d", err, exitCode(err), exitUsage)
	}
}

// roomMessages returns every message of room.
func roomMessages(t *testing.T, f *toolFixture, room string) []replay.Entry {
	t.Helper()
	var out []replay.Entry
	r := replay.NewReader(f.b, replay.Config{Logger: quiet})
	if err := r.Messages(context.Background(), replay.Query{Room: room}, func(e replay.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRequeueTwice: a dead letter with a ref requeued again within the
// idempotency window is stored once; the second run reports the seq stored
// the first time, marked "(already stored)" (jsonl: "duplicate":true).
// With --idempotency-window shorter than the time between the runs, it is
// stored again.
func TestRequeueTwice(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	f.seed(t, "lobby", "alice", "hi", time.Now())
	id := f.deadLetterRef(t, "lobby", "eve", "again", "words", "r-1")
	requeue := func(id, format string, window time.Duration) (string, string) {
		t.Helper()
		tio, out, errs := bufferIO()
		c := rejectedCmd{Conn: f.flags(), Requeue: []string{id}, Format: format, NoModeration: true, Limits: appendFlags{IdempotencyWindow: window}}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatalf("%v (stderr %s)", err, errs)
		}
		return strings.TrimSpace(out.String()), errs.String()
	}
	first, _ := requeue(id, "text", 0)
	if !strings.HasPrefix(first, id+" -> lobby/") || strings.Contains(first, "already") {
		t.Fatalf("first requeue printed %q", first)
	}
	second, errs := requeue(id, "text", 0)
	if want := first + " (already stored)"; second != want || !strings.Contains(errs, "(1 already stored)") {
		t.Fatalf("second requeue printed %q, stderr %q; want %q", second, errs, want)
	}
	third, _ := requeue(id, "jsonl", 0)
	var res replay.Result
	if err := json.Unmarshal([]byte(third), &res); err != nil || !res.Duplicate || id+" -> lobby/"+res.Seq != first {
		t.Fatalf("jsonl %q (%v), want duplicate with the first seq", third, err)
	}
	if got := roomMessages(t, f, "lobby"); len(got) != 2 || got[1].Text != "again" {
		t.Fatalf("lobby = %+v, want hi and one requeued message", got)
	}

	short := f.deadLetterRef(t, "lobby", "eve", "short window", "words", "r-2")
	requeue(short, "text", time.Millisecond)
	time.Sleep(20 * time.Millisecond) // the ref is forgotten
	if again, _ := requeue(short, "text", time.Millisecond); strings.Contains(again, "already") {
		t.Fatalf("requeue after the 1ms window printed %q, want a new message", again)
	}
	if got := roomMessages(t, f, "lobby"); len(got) != 4 {
		t.Fatalf("lobby has %d messages, want 4: --idempotency-window did not reach the backend", len(got))
	}
}
