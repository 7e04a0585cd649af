package client_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// startRedisServer runs a server on addr backed by the Redis rs, so that a
// server started after it on the same addr and Redis has its history.
func startRedisServer(t *testing.T, rs *testredis.Server, addr string) *testserver.Instance {
	t.Helper()
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: quiet, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, server.Config{
		Addr: addr, Backend: backend.Redis(b, quiet), Logger: quiet,
		WS: ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
	})
}

// TestResumeAfterServerRestart: the server stops mid-conversation and a new
// one starts on the same address and Redis; the clients reconnect and
// resume, sends made while it was down are stored, and every member gets
// every message once, in the room's order.
func TestResumeAfterServerRestart(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	first := startRedisServer(t, rs, "127.0.0.1:0")
	addr := first.Addr().String()
	alice := dial(t, config(first.URL(), "alice"))
	bobCfg := config(first.URL(), "bob")
	bobCfg.MinBackoff, bobCfg.MaxBackoff = 300*time.Millisecond, time.Second // likely back after carol's sends, which it then resumes
	bob := dial(t, bobCfg)
	join(t, alice, "lobby", client.JoinOptions{})
	join(t, bob, "lobby", client.JoinOptions{})

	var want []string
	for k := range 5 {
		want = append(want, fmt.Sprintf("before-%d", k))
		send(t, alice, "lobby", want[k])
	}
	got := messages(t, bob, 5)

	first.Stop()
	var offline sync.WaitGroup
	for k := range 5 {
		text := fmt.Sprintf("offline-%d", k)
		offline.Go(func() {
			// Waits for the new server: the send is queued meanwhile.
			if _, err := alice.Send(t.Context(), "lobby", text); err != nil {
				t.Error(err)
			}
		})
	}
	second := startRedisServer(t, rs, addr)
	carol := dial(t, config(second.URL(), "carol"))
	join(t, carol, "lobby", client.JoinOptions{})
	for k := range 5 {
		send(t, carol, "lobby", fmt.Sprintf("carol-%d", k))
	}
	offline.Wait()

	got = append(got, messages(t, bob, 10)...)
	// The room's own order, from a fresh join of its whole history.
	dave := dial(t, config(second.URL(), "dave"))
	join(t, dave, "lobby", client.JoinOptions{History: 50})
	room := messages(t, dave, 15)
	if g, w := texts(got), texts(room); !slices.Equal(g, w) {
		t.Fatalf("bob got %q, want the room's %q", g, w)
	}
	for _, prefix := range []string{"before-", "offline-", "carol-"} {
		n := 0
		for _, m := range room {
			if strings.HasPrefix(m.Text, prefix) {
				n++
			}
		}
		if n != 5 {
			t.Fatalf("the room holds %d messages %s*, want 5: %q", n, prefix, texts(room))
		}
	}
	if n := bob.Stats().Connects; n < 2 {
		t.Fatalf("bob connected %d times, want a reconnect", n)
	}
}

// TestUnackedSendAfterReconnect: a send whose connection is lost before its
// ack is settled after the reconnect, stored once, and any frame written
// again carries its original ref.
func TestUnackedSendAfterReconnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// toServer, toClient: what the proxy drops before the cut.
		toServer, toClient bool
		// resent: whether the send must be written again (it was not
		// stored) or must not (the rejoin shows it stored).
		resent bool
		// user is alice's name as configured ("" is alice): a name the
		// server normalises must still find her own message.
		user string
	}{
		{"lost before the server", true, false, true, ""},
		{"stored, ack lost", false, true, false, ""},
		{"stored, ack lost, name in another form", false, true, false, "ａｌｉｃｅ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// No presence changes: nothing but the replies to alice travels
			// while the proxy drops.
			srv := startServer(t, server.Config{PresenceEvery: time.Hour})
			px := startProxy(t, srv.Addr().String())
			var tokens atomic.Int64
			cfg := config(px.URL(), cmp.Or(tt.user, "alice"))
			cfg.Token = func(context.Context) (string, error) {
				return fmt.Sprintf("tok-%d", tokens.Add(1)), nil
			}
			alice := dial(t, cfg)
			bob := dial(t, config(srv.URL(), "bob")) // directly: sees what is stored
			join(t, alice, "lobby", client.JoinOptions{})
			join(t, bob, "lobby", client.JoinOptions{})

			px.set(tt.toServer, tt.toClient)
			type result struct {
				ack client.Ack
				err error
			}
			done := make(chan result, 1)
			go func() {
				ack, err := alice.Send(t.Context(), "lobby", "hello")
				done <- result{ack, err}
			}()
			var seen []client.Message // by bob
			if tt.toClient {
				seen = messages(t, bob, 1) // stored; alice hears nothing of it
				// Bob's copy can arrive before alice's ack reached the
				// proxy: the ack must be dropped before the proxy lets
				// bytes through again.
				waitFor(t, "alice's ack dropped", func() bool {
					return bytes.Contains(px.droppedToClient(), []byte(`"type":"ack"`))
				})
			} else {
				waitFor(t, "the send frame", func() bool { return len(px.sends("hello")) == 1 })
			}
			px.set(false, false)
			px.cut()

			var res result
			select {
			case res = <-done:
			case <-time.After(wait):
				t.Fatal("send not settled after the reconnect")
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			send(t, bob, "lobby", "marker")
			seen = append(seen, until(t, bob, "marker")...)
			var stored []client.Message
			for _, m := range seen {
				if m.Text == "hello" {
					stored = append(stored, m)
				}
			}
			if len(stored) != 1 || stored[0].Seq != res.ack.Seq || stored[0].Ref != res.ack.Ref {
				t.Fatalf("stored %+v, want it once with the ack's seq and ref (%+v)", stored, res.ack)
			}
			frames := px.sends("hello")
			if got := len(frames) > 1; got != tt.resent {
				t.Fatalf("send frames %+v: resent %v, want %v", frames, got, tt.resent)
			}
			for _, f := range frames {
				if f.Ref != res.ack.Ref {
					t.Fatalf("send frames %+v, want every one with the original ref %s", frames, res.ack.Ref)
				}
			}
			heads := px.handshakes()
			if len(heads) < 2 {
				t.Fatalf("got %d handshakes, want a reconnect", len(heads))
			}
			for i, h := range heads {
				if !strings.Contains(h, fmt.Sprintf("Authorization: Bearer tok-%d\r\n", i+1)) {
					t.Fatalf("handshake %d has no fresh bearer token:\n%s", i+1, h)
				}
			}
		})
	}
}

// until returns c's messages up to and including the first with text.
func until(t *testing.T, c *client.Client, text string) []client.Message {
	t.Helper()
	var out []client.Message
	for len(out) == 0 || out[len(out)-1].Text != text {
		out = append(out, messages(t, c, 1)...)
	}
	return out
}

// TestSendRetriedWhileBackendDown: a send answered unavailable while Redis
// is paused is written again with its ref until Redis is back, then acked
// and stored once.
func TestSendRetriedWhileBackendDown(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("needs a private Redis to pause")
	}
	srv := startRedisServer(t, rs, "127.0.0.1:0")
	alice := dial(t, config(srv.URL(), "alice"))
	bob := dial(t, config(srv.URL(), "bob"))
	join(t, alice, "lobby", client.JoinOptions{})
	join(t, bob, "lobby", client.JoinOptions{})

	rs.Pause()
	resumed := false
	defer func() {
		if !resumed {
			rs.Resume()
		}
	}()
	done := make(chan error, 1)
	var ack client.Ack
	go func() {
		var err error
		ack, err = alice.Send(t.Context(), "lobby", "while down")
		done <- err
	}()
	waitFor(t, "a retry of the send", func() bool { return alice.Stats().Resent > 0 })
	rs.Resume()
	resumed = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("send not acked after Redis came back")
	}
	send(t, bob, "lobby", "marker")
	var stored []client.Message
	for _, m := range until(t, bob, "marker") {
		if m.Text == "while down" {
			stored = append(stored, m)
		}
	}
	if len(stored) != 1 || stored[0].Seq != ack.Seq || stored[0].Ref != ack.Ref {
		t.Fatalf("stored %+v, want it once with the ack's seq and ref (%+v)", stored, ack)
	}
	if n := alice.Stats().Connects; n != 1 {
		t.Fatalf("alice connected %d times, want 1: retries happen on the connection", n)
	}
}

// waitFor waits until cond holds, failing the test after wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRejoinRefusedLosesRoom: a room whose rejoin after a reconnect is
// refused is reported as lost, and sends to it are refused; the other
// rooms go on.
func TestRejoinRefusedLosesRoom(t *testing.T) {
	t.Parallel()
	limits := func(rooms int) ws.Config { return ws.Config{FrameRate: 1e6, FrameBurst: 1e6, MaxRooms: rooms} }
	first := startServer(t, server.Config{WS: limits(2)})
	alice := dial(t, config(first.URL(), "alice"))
	join(t, alice, "a", client.JoinOptions{})
	join(t, alice, "b", client.JoinOptions{})

	addr := first.Addr().String()
	first.Stop()
	startServer(t, server.Config{Addr: addr, WS: limits(1)})
	var ev client.Event
	select {
	case ev = <-alice.Events():
	case <-time.After(wait):
		t.Fatal("no event after the reconnect")
	}
	var e *client.Error
	if ev.Type != client.EventRoomLost || !errors.As(ev.Err, &e) || e.Code != client.CodeRoomLimit {
		t.Fatalf("got %+v, want a room lost to room_limit", ev)
	}
	kept := map[string]string{"a": "b", "b": "a"}[ev.Room]
	if _, err := alice.Send(t.Context(), ev.Room, "hi"); !errors.As(err, &e) || e.Code != client.CodeNotJoined {
		t.Fatalf("send to the lost room: got %v, want not_joined", err)
	}
	send(t, alice, kept, "hi")
}
