package client_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// TestJoinFillsPagedReplies: a server whose replies hold a few messages
// marks them "more"; the client pages back with history requests and
// delivers the whole range it asked for, in order, then live messages.
func TestJoinFillsPagedReplies(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{WS: ws.Config{FrameRate: 1e6, FrameBurst: 1e6, MaxPageMessages: 3}})
	writer := dial(t, config(srv.URL(), "writer"))
	var all []string
	for k := range 20 {
		all = append(all, fmt.Sprintf("m%02d", k))
	}
	tests := []struct {
		name string
		// opts returns the join options given the acks of all.
		opts func(acks []client.Ack) client.JoinOptions
		// maxFill is the reader's Config.MaxFill (0: default); gap says
		// an EventGap comes first.
		maxFill int
		gap     bool
		want    []string
	}{
		{"history", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 10} }, 0, false, all[10:]},
		{"history of more than kept", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 100} }, 0, false, all},
		{"since", func(a []client.Ack) client.JoinOptions { return client.JoinOptions{Since: a[2].Seq} }, 0, false, all[3:]},
		{"since, beyond MaxFill", func(a []client.Ack) client.JoinOptions { return client.JoinOptions{Since: a[2].Seq} }, 7, true, all[13:]},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := fmt.Sprintf("fill-%d", i)
			join(t, writer, room, client.JoinOptions{})
			var acks []client.Ack
			for _, text := range all {
				acks = append(acks, send(t, writer, room, text))
			}
			cfg := config(srv.URL(), "reader")
			cfg.PageLimit, cfg.MaxFill = 4, tt.maxFill
			reader := dial(t, cfg)
			join(t, reader, room, tt.opts(acks))
			if tt.gap {
				select {
				case ev := <-reader.Events():
					if ev.Type != client.EventGap || ev.Room != room {
						t.Fatalf("got %v event in %s, want a gap in %s", ev.Type, ev.Room, room)
					}
				case <-time.After(wait):
					t.Fatal("no gap event")
				}
			}
			send(t, writer, room, "live")
			want := append(slices.Clone(tt.want), "live")
			if got := texts(messages(t, reader, len(want))); !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestResumeAfterTrimmedReportsGap: a resume whose since was trimmed by the
// room's retention delivers an EventGap, then the messages kept.
func TestResumeAfterTrimmedReportsGap(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{RoomMaxLen: 5})
	writer := dial(t, config(srv.URL(), "writer"))
	join(t, writer, "lobby", client.JoinOptions{})
	var acks []client.Ack
	for k := range 10 {
		acks = append(acks, send(t, writer, "lobby", fmt.Sprintf("m%d", k)))
	}
	reader := dial(t, config(srv.URL(), "reader"))
	join(t, reader, "lobby", client.JoinOptions{Since: acks[0].Seq})
	select {
	case ev := <-reader.Events():
		if ev.Type != client.EventGap {
			t.Fatalf("got %v event, want a gap", ev.Type)
		}
	case <-time.After(wait):
		t.Fatal("no gap event")
	}
	got := texts(messages(t, reader, 5))
	if want := []string{"m5", "m6", "m7", "m8", "m9"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
