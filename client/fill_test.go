package client_test

import (
	"fmt"
	"slices"
	"testing"

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
		want []string
	}{
		{"history", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 10} }, all[10:]},
		{"history of more than kept", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 100} }, all},
		{"since", func(a []client.Ack) client.JoinOptions { return client.JoinOptions{Since: a[2].Seq} }, all[3:]},
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
			cfg.PageLimit = 4
			reader := dial(t, cfg)
			join(t, reader, room, tt.opts(acks))
			send(t, writer, room, "live")
			want := append(slices.Clone(tt.want), "live")
			if got := texts(messages(t, reader, len(want))); !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}
