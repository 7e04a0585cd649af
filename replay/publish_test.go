package replay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// startPublisher runs a Publisher over b until the test ends.
func startPublisher(t *testing.T, cfg replay.PublisherConfig) *replay.Publisher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cfg.Logger = quiet
	pub, err := replay.StartPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Errorf("close publisher: %v", err)
		}
	})
	return pub
}

// entries returns every message of room.
func entries(t *testing.T, r *replay.Reader, room string) []replay.Entry {
	t.Helper()
	var out []replay.Entry
	err := r.Messages(context.Background(), replay.Query{Room: room}, func(e replay.Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReplayInto: messages replayed at 10x keep their order, user and
// relative timing (offsets of 1 s and 2.5 s from the first become 100 ms and
// 250 ms, -10/+40 ms), and carry replayed_from. The machine may be loaded
// by other work, which can only make a message late, so the timing gets
// three attempts (into fresh rooms); order and metadata are checked in each.
func TestReplayInto(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, srv, "")
	base := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	offsets := []time.Duration{0, time.Second, 2500 * time.Millisecond}
	var seqs []string
	for i, off := range offsets {
		seqs = append(seqs, seed(t, b, "lobby", []string{"alice", "bob", "carol"}[i], []string{"one", "two", "three"}[i], base.Add(off)))
	}
	r := replay.NewReader(b, replay.Config{Logger: quiet})
	pub := startPublisher(t, replay.PublisherConfig{Backend: b})
	ctx := context.Background()
	const attempts = 3
	for attempt := range attempts {
		into := fmt.Sprintf("lobby-replay%d", attempt)
		pacer := replay.NewPacer(10)
		var results []replay.Result
		err := r.Messages(ctx, replay.Query{Room: "lobby"}, func(e replay.Entry) error {
			if err := pacer.Wait(ctx, e.TS); err != nil {
				return err
			}
			res, err := pub.Replay(ctx, e, into)
			results = append(results, res)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		got := entries(t, r, into)
		if len(got) != 3 || len(results) != 3 {
			t.Fatalf("replayed %d messages, results %+v", len(got), results)
		}
		for i, e := range got {
			want := []string{"alice: one", "bob: two", "carol: three"}[i]
			if e.User+": "+e.Text != want || e.Meta[replay.MetaReplayedFrom] != "lobby/"+seqs[i] || results[i].Seq != e.ID || results[i].Error != nil {
				t.Fatalf("message %d = %s: %s from %s (result %+v), want %s from lobby/%s",
					i, e.User, e.Text, e.Meta[replay.MetaReplayedFrom], results[i], want, seqs[i])
			}
		}
		var bad []string
		for i := 1; i < len(got); i++ {
			off, want := got[i].TS.Sub(got[0].TS), offsets[i]/10
			if off < want-10*time.Millisecond || off > want+40*time.Millisecond {
				bad = append(bad, fmt.Sprintf("offset %d = %v, want %v -10/+40ms", i, off, want))
			}
		}
		if len(bad) == 0 {
			break
		}
		if attempt == attempts-1 {
			t.Fatalf("timing off in %d attempts; last: %v", attempts, bad)
		}
		t.Logf("attempt %d: %v", attempt, bad)
	}
	if _, err := pub.Replay(ctx, replay.Entry{Room: "lobby", User: "x", Text: "y"}, "lobby"); !errors.Is(err, replay.ErrSameRoom) {
		t.Fatalf("replay into the source room: %v, want ErrSameRoom", err)
	}
}

// TestPacerCancel: a wait ends with the context.
func TestPacerCancel(t *testing.T) {
	t.Parallel()
	p := replay.NewPacer(1)
	ctx, cancel := context.WithCancel(context.Background())
	t0 := time.Now()
	if err := p.Wait(ctx, t0); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := p.Wait(ctx, t0.Add(time.Hour)); err == nil || time.Since(t0) > wait {
		t.Fatalf("wait = %v after %v, want a cancelled wait", err, time.Since(t0))
	}
}

// deadLetter stores a rejected message in the dead-letter stream.
func deadLetter(t *testing.T, b interface {
	DeadLetter(context.Context, *message.Message) error
}, room, user, text, moderator string) {
	t.Helper()
	m := message.NewMessage("dl-"+text, []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "c1")
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(pipeline.MetaCode, pipeline.CodeRejected)
	m.Metadata.Set(pipeline.MetaReason, "contains "+text)
	m.Metadata.Set(pipeline.MetaModerator, moderator)
	if err := b.DeadLetter(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// TestRequeue: dead letters are listed with their reasons and filtered by
// moderator; a requeued one is stored in its room with requeued_from, and
// one that a moderator rejects again is dead-lettered again.
func TestRequeue(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, srv, "")
	seed(t, b, "lobby", "alice", "existing", time.Time{})
	deadLetter(t, b, "lobby", "bob", "fine now", "words")
	deadLetter(t, b, "lobby", "eve", "spam", "words")
	deadLetter(t, b, "dev", "mallory", "flood", "rate")
	r := replay.NewReader(b, replay.Config{Logger: quiet})
	ctx := context.Background()
	var listed []replay.Entry
	if err := r.Rejected(ctx, replay.Range{}, replay.Filter{Moderator: "words"}, func(e replay.Entry) error {
		listed = append(listed, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].Text != "fine now" || listed[0].Reason() != "contains fine now" || listed[1].Moderator() != "words" {
		t.Fatalf("listed %+v", listed)
	}
	if _, err := r.DeadLetters(ctx, []string{"1-1"}); err == nil {
		t.Fatal("DeadLetters of a missing ID succeeded")
	}
	byID, err := r.DeadLetters(ctx, []string{listed[1].ID, listed[0].ID})
	if err != nil || len(byID) != 2 || byID[0].Text != "spam" {
		t.Fatalf("DeadLetters = %+v, %v", byID, err)
	}

	noSpam := pipeline.Moderator{Name: "nospam", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if strings.Contains(string(msg.Payload), "spam") {
				return nil, pipeline.Errorf(pipeline.CodeRejected, "still spam")
			}
			return h(msg)
		}
	}}
	pub := startPublisher(t, replay.PublisherConfig{Backend: b, Moderators: []pipeline.Moderator{noSpam}})
	ok, err := pub.Requeue(ctx, listed[0])
	if err != nil || ok.Error != nil || ok.Seq == "" || ok.From != listed[0].ID {
		t.Fatalf("requeue = %+v, %v", ok, err)
	}
	again, err := pub.Requeue(ctx, listed[1])
	if err != nil || again.Error == nil || again.Error.Reason != "still spam" || again.Error.Moderator != "nospam" {
		t.Fatalf("requeue of spam = %+v, %v", again, err)
	}
	room := entries(t, r, "lobby")
	if len(room) != 2 || room[1].ID != ok.Seq || room[1].Text != "fine now" || room[1].User != "bob" || room[1].Meta[replay.MetaRequeuedFrom] != listed[0].ID {
		t.Fatalf("lobby = %+v", room)
	}
	var all []replay.Entry
	_ = r.Rejected(ctx, replay.Range{}, replay.Filter{}, func(e replay.Entry) error { all = append(all, e); return nil })
	if n := len(all); n != 4 || all[3].Meta[replay.MetaRequeuedFrom] != listed[1].ID || all[3].Moderator() != "nospam" {
		t.Fatalf("dead letters after requeue = %+v", all)
	}
}
