package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/server"
)

// TestCloseStopsEverything: Close, or the end of Dial's context, stops the
// client wherever it is: every goroutine ends, waiting calls fail with
// ErrClosed, and Events is closed. (Not parallel: it counts goroutines.)
func TestCloseStopsEverything(t *testing.T) {
	tests := []struct {
		name string
		// serverDown stops the server first, so the client is reconnecting
		// with a send waiting.
		serverDown bool
		// cancel ends Dial's context instead of calling Close.
		cancel  bool
		wantErr error // of Err
	}{
		{"connected", false, false, nil},
		{"reconnecting with a send waiting", true, false, nil},
		{"context ended while reconnecting", true, true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, server.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := config(srv.URL(), "alice")
			cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour // stays in its backoff
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			join(t, c, "lobby", client.JoinOptions{})
			send(t, c, "lobby", "hi")

			sent := make(chan error, 1)
			if tt.serverDown {
				srv.Stop()
				go func() {
					_, err := c.Send(context.Background(), "lobby", "queued")
					sent <- err
				}()
				waitFor(t, "the send to wait", func() bool { return c.Stats().Pending == 1 })
			}
			if len(clientGoroutines()) == 0 {
				t.Fatal("the goroutine check sees no goroutine of the running client")
			}
			if tt.cancel {
				cancel()
				select {
				case <-c.Done():
				case <-time.After(wait):
					t.Fatal("client still running after its context ended")
				}
			} else if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Err(); !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got Err %v, want %v", err, tt.wantErr)
			}
			if tt.serverDown {
				select {
				case err := <-sent:
					if !errors.Is(err, client.ErrClosed) {
						t.Fatalf("waiting send: got %v, want ErrClosed", err)
					}
				case <-time.After(wait):
					t.Fatal("waiting send not released")
				}
			}
			if _, err := c.Send(context.Background(), "lobby", "late"); !errors.Is(err, client.ErrClosed) {
				t.Fatalf("send after close: got %v, want ErrClosed", err)
			}
			for ev := range c.Events() {
				if ev.Type != client.EventMessage || ev.Message.Text != "hi" {
					t.Fatalf("got event %+v after close", ev)
				}
			}
			noClientGoroutines(t)
			if err := c.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// TestDialRefused: Dial returns the first handshake's failure; a bad
// configuration is refused before any dial.
func TestDialRefused(t *testing.T) {
	srv := startServer(t, server.Config{})
	tests := []struct {
		name  string
		cfg   client.Config
		check func(error) bool
	}{
		{"bad user", config(srv.URL(), " spaced "), func(err error) bool {
			var he *client.HandshakeError
			return errors.As(err, &he) && he.StatusCode == http.StatusBadRequest && he.Reason != ""
		}},
		{"no user", config(srv.URL(), ""), func(err error) bool { return errors.Is(err, client.ErrConfig) }},
		{"bad scheme", config("ftp://"+srv.Addr().String(), "alice"), func(err error) bool { return errors.Is(err, client.ErrConfig) }},
		{"token provider fails", func() client.Config {
			cfg := config(srv.URL(), "alice")
			cfg.Token = func(context.Context) (string, error) { return "", errTestToken }
			return cfg
		}(), func(err error) bool { return errors.Is(err, errTestToken) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial(context.Background(), tt.cfg)
			if err == nil {
				_ = c.Close()
				t.Fatal("dial succeeded")
			}
			if !tt.check(err) {
				t.Fatalf("got %v (%T)", err, err)
			}
		})
	}
	noClientGoroutines(t)
}

var errTestToken = errors.New("token service down")

// TestCloseCodes: a server close frame decides what the client does: most
// codes reconnect and resume (4002 with a fresh token), 4001 stops it with
// ErrUnauthorized. The codes come from a front end (the test's proxy) in
// front of a real server.
func TestCloseCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code   int
		reason string
		stops  bool
	}{
		{1001, "going away", false},
		{1008, "send queue full: client too slow", false},
		{1012, "resync: reconnect and resume", false},
		{4002, "token expired", false},
		{4001, "unauthorized", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, server.Config{PresenceEvery: time.Hour})
			px := startProxy(t, srv.Addr().String())
			var tokens atomic.Int64
			cfg := config(px.URL(), "alice")
			cfg.Token = func(context.Context) (string, error) { return fmt.Sprintf("tok-%d", tokens.Add(1)), nil }
			alice := dial(t, cfg)
			bob := dial(t, config(srv.URL(), "bob"))
			join(t, alice, "lobby", client.JoinOptions{})
			join(t, bob, "lobby", client.JoinOptions{})
			send(t, bob, "lobby", "before")
			messages(t, alice, 1)

			px.closeClients(tt.code, tt.reason)
			if tt.stops {
				select {
				case <-alice.Done():
				case <-time.After(wait):
					t.Fatal("client still running")
				}
				if err := alice.Err(); !errors.Is(err, client.ErrUnauthorized) {
					t.Fatalf("got Err %v, want ErrUnauthorized", err)
				}
				_, err := alice.Send(context.Background(), "lobby", "late")
				if !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrUnauthorized) {
					t.Fatalf("send after the stop: got %v, want ErrClosed and ErrUnauthorized", err)
				}
				return
			}
			send(t, bob, "lobby", "after") // before or after alice is back: she resumes
			if got := texts(messages(t, alice, 1)); got[0] != "after" {
				t.Fatalf("got %q, want after", got)
			}
			send(t, alice, "lobby", "alice is back")
			if n := tokens.Load(); n < 2 {
				t.Fatalf("token asked %d times, want a fresh one per dial", n)
			}
		})
	}
}
