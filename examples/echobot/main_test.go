package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
)

// TestEchoesMentions runs the bot against a real server: a mention is
// echoed, other messages are not, and the bot stops with its context.
func TestEchoesMentions(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := testserver.Start(t, server.Config{Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, srv.URL(), "echobot", "lobby") }()

	alice, err := client.Dial(ctx, client.Config{URL: srv.URL(), User: "alice", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if err := alice.Join(ctx, "lobby", client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	// The bot may join after the first mentions: mention it until it answers.
	deadline := time.After(10 * time.Second)
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for echoed := false; !echoed; {
		select {
		case <-ticker.C:
			for _, text := range []string{"no mention", "hi @echobot"} {
				if _, err := alice.Send(ctx, "lobby", text); err != nil {
					t.Fatal(err)
				}
			}
		case m := <-alice.Events():
			if m.Message.User != "echobot" {
				continue
			}
			if want := "alice said: hi @echobot"; m.Message.Text != want {
				t.Fatalf("got echo %q, want %q", m.Message.Text, want)
			}
			echoed = true
		case <-deadline:
			t.Fatal("no echo")
		}
	}
	cancel()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("bot stopped with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bot did not stop")
	}
}
