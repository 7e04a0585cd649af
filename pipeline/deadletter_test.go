package pipeline_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
)

// gatedDeadLetters is a dead-letter store whose writes wait for release
// (when set) and then fail with err (when set).
type gatedDeadLetters struct {
	entered chan struct{}
	release chan struct{}
	err     error
}

func (d *gatedDeadLetters) DeadLetter(ctx context.Context, _ *message.Message) error {
	if d.release != nil {
		d.entered <- struct{}{}
		select {
		case <-d.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.err
}

// refuseBad rejects every message whose text is "bad".
var refuseBad = pipeline.Moderator{Name: "no-bad", Middleware: func(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if string(msg.Payload) == "bad" {
			return nil, pipeline.Errorf(pipeline.CodeRejected, "bad")
		}
		return h(msg)
	}
}}

// TestDeadLetterOutsideShard: while a rejected message's dead letter is
// being written (a slow store), the other rooms of its shard go on; the
// rejected sender is answered once the dead letter is written.
func TestDeadLetterOutsideShard(t *testing.T) {
	be, err := memstore.New(memstore.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	dead := &gatedDeadLetters{entered: make(chan struct{}, 1), release: make(chan struct{})}
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: dead, Shards: 1, Moderators: []pipeline.Moderator{refuseBad}})
	rejected := make(chan pipeline.Outcome, 1)
	go func() {
		o, err := in.Submit(context.Background(), pipeline.Submission{ConnID: "m", User: "mallory", Room: "spam", Text: "bad", Ref: "b1"})
		if err != nil {
			o.Err = &pipeline.Error{Code: "submit", Reason: err.Error()}
		}
		rejected <- o
	}()
	select {
	case <-dead.entered:
	case <-time.After(wait):
		t.Fatal("the rejected message was not dead-lettered")
	}
	done := make(chan pipeline.Outcome, 1)
	go func() {
		o, _ := in.Submit(context.Background(), pipeline.Submission{ConnID: "a", User: "alice", Room: "lobby", Text: "hi", Ref: "a1"})
		done <- o
	}()
	select {
	case o := <-done:
		if o.Err != nil {
			t.Fatalf("alice's send: %v", o.Err)
		}
	case <-time.After(wait):
		close(dead.release)
		t.Fatal("a send of another room of the shard waited for the dead letter")
	}
	select {
	case o := <-rejected:
		t.Fatalf("the rejected send was answered (%+v) before its dead letter was written", o)
	default:
	}
	close(dead.release)
	if o := <-rejected; o.Err == nil || o.Err.Code != pipeline.CodeRejected {
		t.Fatalf("the rejected send: %+v", o)
	}
}

// TestDeadLetterFailuresLoggedOnce: a failing dead-letter store is logged
// once while it fails, not once per message.
func TestDeadLetterFailuresLoggedOnce(t *testing.T) {
	be, err := memstore.New(memstore.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var buf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dead := &gatedDeadLetters{err: errors.New("store down")}
	in := runIngest(t, pipeline.IngestConfig{Store: be, DeadLetters: dead, Logger: log, Moderators: []pipeline.Moderator{refuseBad}})
	for i := range 5 {
		o, err := in.Submit(context.Background(), pipeline.Submission{ConnID: "m", User: "mallory", Room: "spam", Text: "bad", Ref: string(rune('a' + i))})
		if err != nil || o.Err == nil || o.Err.Code != pipeline.CodeRejected {
			t.Fatalf("send %d: %+v, %v", i, o, err)
		}
	}
	if n := strings.Count(buf.String(), "dead letter"); n != 1 {
		t.Fatalf("%d lines about dead letters for 5 failures, want 1:\n%s", n, buf.String())
	}
}
