package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// TestSendAck: Send returns the ack of the stored message, and the sender
// receives its own message with the same seq and ref.
func TestSendAck(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, alice, "lobby", client.JoinOptions{})

	ack := send(t, alice, "lobby", "hello <world> & all")
	if ack.Room != "lobby" || ack.ID == "" || ack.Seq == "" || ack.Ref == "" {
		t.Fatalf("got ack %+v, want room lobby with id, seq and ref", ack)
	}
	m := messages(t, alice, 1)[0]
	want := client.Message{Room: "lobby", ID: ack.ID, Seq: ack.Seq, User: "alice", Text: "hello <world> & all", Ref: ack.Ref, Time: m.Time}
	if m != want || m.Time.IsZero() {
		t.Fatalf("got message %+v, want %+v with a time", m, want)
	}
}

// TestReceiveOrder: concurrent sends reach every member once, in one
// order, each sender's messages in sending order.
func TestReceiveOrder(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	alice := dial(t, config(srv.URL(), "alice"))
	bob := dial(t, config(srv.URL(), "bob"))
	join(t, alice, "lobby", client.JoinOptions{})
	join(t, bob, "lobby", client.JoinOptions{})

	const senders, each = 4, 25
	acked := make(chan client.Ack, senders*each)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for k := range each {
				ack, err := alice.Send(t.Context(), "lobby", fmt.Sprintf("s%d-%02d", s, k))
				if err != nil {
					t.Error(err)
					return
				}
				acked <- ack
			}
		})
	}
	wg.Wait()
	close(acked)

	got := map[string][]client.Message{"alice": messages(t, alice, senders*each), "bob": messages(t, bob, senders*each)}
	seqs := func(ms []client.Message) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	if a, b := seqs(got["alice"]), seqs(got["bob"]); !slices.Equal(a, b) {
		t.Fatalf("alice and bob got different orders:\n%v\n%v", a, b)
	}
	seen := map[string]bool{}
	next := map[string]int{}
	for _, m := range got["bob"] {
		if seen[m.Seq] {
			t.Fatalf("got seq %s twice", m.Seq)
		}
		seen[m.Seq] = true
		var s, k int
		if _, err := fmt.Sscanf(m.Text, "s%d-%d", &s, &k); err != nil {
			t.Fatalf("unexpected message %q", m.Text)
		}
		if k != next[fmt.Sprint(s)] {
			t.Fatalf("got %q, want s%d-%02d next", m.Text, s, next[fmt.Sprint(s)])
		}
		next[fmt.Sprint(s)]++
	}
	for ack := range acked {
		if !seen[ack.Seq] {
			t.Fatalf("acked seq %s was not delivered", ack.Seq)
		}
	}
}

// TestJoinHistoryAndSince: a join delivers the history it asks for, then
// live messages, with no gap and no duplicate.
func TestJoinHistoryAndSince(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	writer := dial(t, config(srv.URL(), "writer"))
	tests := []struct {
		name string
		// opts returns the join options given the acks of m0..m9.
		opts func(acks []client.Ack) client.JoinOptions
		want []string
	}{
		{"no history", func([]client.Ack) client.JoinOptions { return client.JoinOptions{} }, nil},
		{"three", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 3} }, []string{"m7", "m8", "m9"}},
		{"more than kept", func([]client.Ack) client.JoinOptions { return client.JoinOptions{History: 50} },
			[]string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"}},
		{"since", func(a []client.Ack) client.JoinOptions { return client.JoinOptions{Since: a[4].Seq} },
			[]string{"m5", "m6", "m7", "m8", "m9"}},
		{"since the newest", func(a []client.Ack) client.JoinOptions { return client.JoinOptions{Since: a[9].Seq} }, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := fmt.Sprintf("history-%d", i)
			join(t, writer, room, client.JoinOptions{})
			var acks []client.Ack
			for k := range 10 {
				acks = append(acks, send(t, writer, room, fmt.Sprintf("m%d", k)))
			}
			reader := dial(t, config(srv.URL(), "reader"))
			join(t, reader, room, tt.opts(acks))
			send(t, writer, room, "live")
			want := append(slices.Clone(tt.want), "live")
			if got := texts(messages(t, reader, len(want))); !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// TestRefusals: refusals, the server's and the client's own, are *Error
// values with the code, reason, ref and room; none costs the connection.
func TestRefusals(t *testing.T) {
	t.Parallel()
	noSpam := pipeline.Moderator{Name: "no-spam", Middleware: func(next message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if strings.Contains(string(msg.Payload), "spam") {
				return nil, pipeline.Errorf(pipeline.CodeRejected, "no spam here")
			}
			return next(msg)
		}
	}}
	srv := startServer(t, server.Config{MaxTextBytes: 32, Moderators: []pipeline.Moderator{noSpam}})
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, alice, "lobby", client.JoinOptions{})
	tests := []struct {
		name, room, text string
		want             client.Error // Reason and Ref are checked for presence
	}{
		{"rejected by a moderator", "lobby", "buy spam", client.Error{Code: client.CodeRejected, Room: "lobby", Moderator: "no-spam"}},
		{"over the server's text limit", "lobby", strings.Repeat("x", 33), client.Error{Code: client.CodeTooLarge, Room: "lobby"}},
		{"empty", "lobby", "", client.Error{Code: client.CodeInvalid, Room: "lobby"}},
		{"room not joined", "elsewhere", "hi", client.Error{Code: client.CodeNotJoined, Room: "elsewhere"}},
		{"over the frame limit", "lobby", strings.Repeat("x", 70<<10), client.Error{Code: client.CodeTooLarge, Room: "lobby"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := alice.Send(t.Context(), tt.room, tt.text)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want a *client.Error", err)
			}
			got := *e
			got.Reason, got.Ref = "", ""
			if got != tt.want || e.Reason == "" {
				t.Fatalf("got %+v, want %+v with a reason", *e, tt.want)
			}
			if tt.room == "lobby" && e.Ref == "" {
				t.Fatalf("got no ref in %+v", *e)
			}
		})
	}
	var e *client.Error
	if err := alice.Join(t.Context(), "no spaces", client.JoinOptions{}); !errors.As(err, &e) || e.Code != client.CodeInvalid {
		t.Fatalf("join of a bad room name: got %v, want code invalid", err)
	}
	send(t, alice, "lobby", "still here")
	if n := alice.Stats().Connects; n != 1 {
		t.Fatalf("got %d connections, want 1: a refusal must not cost the connection", n)
	}
}

// TestRateLimited: sends beyond the server's frame rate are held back for
// the retry_after_ms the server names and written again: every one is
// stored once.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{WS: ws.Config{FrameRate: 10, FrameBurst: 5}})
	alice := dial(t, config(srv.URL(), "alice")) // no frame limit of its own
	bob := dial(t, config(srv.URL(), "bob"))
	join(t, alice, "lobby", client.JoinOptions{})
	join(t, bob, "lobby", client.JoinOptions{})

	const n = 12
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			if _, err := alice.Send(t.Context(), "lobby", fmt.Sprintf("m%02d", k)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := texts(messages(t, bob, n))
	slices.Sort(got)
	for k, text := range got {
		if want := fmt.Sprintf("m%02d", k); text != want {
			t.Fatalf("got %q, want each of m00..m%02d once", got, n-1)
		}
	}
	if st := alice.Stats(); st.RateLimited == 0 || st.Connects != 1 {
		t.Fatalf("got %+v, want rate_limited answers on one connection", st)
	}
}

// TestModeratorRateLimit: a send a moderator refuses with rate_limited is
// written again after its retry_after_ms until it is stored.
func TestModeratorRateLimit(t *testing.T) {
	t.Parallel()
	var refused atomic.Int64
	slow := pipeline.Moderator{Name: "slow", Middleware: func(next message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if refused.Add(1) <= 2 {
				e := pipeline.Errorf(pipeline.CodeRateLimited, "wait a little")
				e.RetryAfter = 50 * time.Millisecond
				return nil, e
			}
			return next(msg)
		}
	}}
	srv := startServer(t, server.Config{Moderators: []pipeline.Moderator{slow}})
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, alice, "lobby", client.JoinOptions{})
	ack := send(t, alice, "lobby", "patience")
	if m := messages(t, alice, 1)[0]; m.Text != "patience" || m.Seq != ack.Seq {
		t.Fatalf("got %+v, want the message of ack %+v", m, ack)
	}
	if st := alice.Stats(); st.RateLimited != 2 || st.Resent != 2 {
		t.Fatalf("got %+v, want 2 rate_limited answers and 2 resends", st)
	}
}

// TestSlowConsumer: a consumer that does not read while it sends neither
// blocks its sends nor loses messages; the room falls behind and catches
// up, every message once and in order.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	cfg := config(srv.URL(), "bob")
	cfg.EventBuffer = 4
	bob := dial(t, cfg)
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, bob, "lobby", client.JoinOptions{})
	join(t, alice, "lobby", client.JoinOptions{})

	const n = 60
	var want []string
	for k := range n {
		text := fmt.Sprintf("m%02d", k)
		who := alice
		if k%2 == 0 {
			who = bob // bob sends without reading: his acks must still come
		}
		send(t, who, "lobby", text)
		want = append(want, text)
	}
	if got := texts(messages(t, bob, n)); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if st := bob.Stats(); st.Deferred == 0 || st.Connects != 1 {
		t.Fatalf("got %+v, want deferred events and one connection", st)
	}
}

// TestHistoryOverBudget: History over the server's history budget fails
// with rate_limited and the server's retry hint, and holds back nothing
// else: the connection's next send is acked long before that hint.
func TestHistoryOverBudget(t *testing.T) {
	t.Parallel()
	const page = 4 << 10
	srv := startServer(t, server.Config{WS: ws.Config{
		FrameRate: 1e6, FrameBurst: 1e6, MaxPageBytes: page, HistoryBurst: 2 * page, HistoryRate: 512,
	}})
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, alice, "lobby", client.JoinOptions{})
	var last client.Ack
	for k := range 40 {
		last = send(t, alice, "lobby", fmt.Sprintf("m%02d %s", k, strings.Repeat("x", 1000)))
	}
	bob := dial(t, config(srv.URL(), "bob"))
	join(t, bob, "lobby", client.JoinOptions{History: 1})
	// Pages until one is refused with a hint of a second or more (at 512
	// bytes a second, a debt of up to a page takes up to 8 s): a page
	// served right after a short hint leaves about a page of debt.
	var refused *client.Error
	for i := 0; refused == nil || refused.RetryAfter < time.Second; i++ {
		if i == 20 {
			t.Fatalf("20 pages of about %d bytes asked for with a budget of %d, and no refusal of a second or more", page, 2*page)
		}
		if refused != nil {
			time.Sleep(refused.RetryAfter)
			refused = nil
		}
		p, err := bob.History(t.Context(), "lobby", last.Seq, client.MaxHistory)
		switch {
		case errors.As(err, &refused):
			if refused.Code != client.CodeRateLimited || refused.RetryAfter <= 0 || refused.RetryAfter > 8100*time.Millisecond || refused.Room != "lobby" {
				t.Fatalf("refused with %+v, want rate_limited in lobby with a retry hint of at most 8.1 s", refused)
			}
		case err != nil:
			t.Fatal(err)
		case len(p.Messages) == 0:
			t.Fatal("empty page")
		}
	}
	refusedAt := time.Now()
	send(t, bob, "lobby", "not held back")
	if d := time.Since(refusedAt); d >= refused.RetryAfter/2 {
		t.Fatalf("the send was acked %v after the refusal: held back by its retry hint of %v", d, refused.RetryAfter)
	}

	// The refusal of a request whose caller has given up holds back
	// nothing either. The budget is still in debt for most of the hint.
	// The refusal is immediate, so it can reach the client before History
	// has seen its context cancelled; then History returns it, and the
	// request was not abandoned: ask again.
	var limited int64
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("20 requests with a cancelled context, and each was answered before it was given up")
		}
		limited = bob.Stats().RateLimited
		gone, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := bob.History(gone, "lobby", last.Seq, client.MaxHistory)
		var e *client.Error
		if errors.Is(err, context.Canceled) {
			break
		}
		if !errors.As(err, &e) || e.Code != client.CodeRateLimited {
			t.Fatalf("History with a cancelled context: %v", err)
		}
	}
	for deadline := time.Now().Add(wait); bob.Stats().RateLimited == limited; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned request was not refused")
		}
	}
	again := time.Now()
	left := refused.RetryAfter - again.Sub(refusedAt)
	send(t, bob, "lobby", "still not held back")
	if d := time.Since(again); d >= left/2 {
		t.Fatalf("the send was acked %v after the abandoned request's refusal, with about %v of the hint left", d, left)
	}
}

// TestResumeOverHistoryBudget: a join with since whose missing messages are
// far more than the server's history budget delivers every one of them, in
// order and without a gap: each page refused over the budget is asked for
// again once it is paid back.
func TestResumeOverHistoryBudget(t *testing.T) {
	t.Parallel()
	const page = 4 << 10
	srv := startServer(t, server.Config{WS: ws.Config{
		FrameRate: 1e6, FrameBurst: 1e6, MaxPageBytes: page, HistoryBurst: 2 * page, HistoryRate: 4 * page,
	}})
	alice := dial(t, config(srv.URL(), "alice"))
	join(t, alice, "lobby", client.JoinOptions{})
	var acks []client.Ack
	var want []string
	for k := range 60 {
		text := fmt.Sprintf("m%02d %s", k, strings.Repeat("x", 1000))
		want = append(want, text)
		acks = append(acks, send(t, alice, "lobby", text))
	}
	bob := dial(t, config(srv.URL(), "bob"))
	join(t, bob, "lobby", client.JoinOptions{Since: acks[0].Seq})
	if got := texts(messages(t, bob, len(want)-1)); !slices.Equal(got, want[1:]) {
		t.Fatalf("resumed %d messages, want the %d after since in order", len(got), len(want)-1)
	}
	if st := bob.Stats(); st.RateLimited == 0 {
		t.Fatalf("got %+v: the resume was never over the budget, so the test shows nothing", st)
	}
}
