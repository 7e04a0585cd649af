package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/client"
	"github.com/chatstream/chatstream/server"
)

const jwtSecret = "client-test-secret-0123456789abcdef012345"

// startJWTServer runs a server with --auth jwt (HS256 with jwtSecret).
func startJWTServer(t *testing.T) *server.Server {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(jwtSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServer(t, server.Config{PresenceEvery: time.Hour, Auth: auth.Config{Mode: auth.ModeJWT, SecretFile: secret}}).Server
}

// tokens is a Config.Token that issues tokens for user valid for ttl and
// counts them.
func tokens(user string, ttl time.Duration, n *atomic.Int64, extra map[string]string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		n.Add(1)
		return auth.IssueHS256([]byte(jwtSecret), auth.Grant{User: user, TTL: ttl, Claims: extra})
	}
}

// TestJWTExpiryReconnects: against a real server with --auth jwt, the
// client's user is its token's (not Config.User), and a token that expires
// (close 4002) makes the client dial again with a fresh one and resume
// without losing a message.
func TestJWTExpiryReconnects(t *testing.T) {
	t.Parallel()
	srv := startJWTServer(t)
	var aliceTokens, bobTokens atomic.Int64
	cfg := config(srv.URL(), "alice")
	// The server keeps a connection until exp plus the clock skew it
	// allows (auth.DefaultLeeway), and jwt's exp has whole seconds: each
	// token is issued that much in the past and lasts 1–2 s more.
	cfg.Token = func(context.Context) (string, error) {
		aliceTokens.Add(1)
		return auth.IssueHS256([]byte(jwtSecret), auth.Grant{User: "alice", TTL: 2 * time.Second, Now: time.Now().Add(-auth.DefaultLeeway)})
	}
	alice := dial(t, cfg)
	bcfg := config(srv.URL(), "mallory") // the name the client asks for does not count
	bcfg.Token = tokens("bob", time.Hour, &bobTokens, nil)
	bob := dial(t, bcfg)
	join(t, alice, "lobby", client.JoinOptions{})
	join(t, bob, "lobby", client.JoinOptions{})
	send(t, bob, "lobby", "before")
	if m := messages(t, alice, 1); m[0].User != "bob" {
		t.Fatalf("got a message from %q, want bob (the token's sub)", m[0].User)
	}
	deadline := time.Now().Add(wait)
	for aliceTokens.Load() < 3 { // two expiries
		if time.Now().After(deadline) {
			t.Fatalf("alice fetched %d tokens, want a fresh one after each 4002", aliceTokens.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	send(t, bob, "lobby", "after")
	if got := texts(messages(t, alice, 1)); got[0] != "after" {
		t.Fatalf("got %q, want after (resumed across the expiry)", got)
	}
	send(t, alice, "lobby", "alice is back")
	if err := alice.Err(); err != nil {
		t.Fatalf("alice stopped: %v", err)
	}
}

// TestJWTRefused: a token the server refuses stops the client with
// ErrUnauthorized (close 4001), and a send to a room the token does not
// allow is a *client.Error with CodeForbidden.
func TestJWTRefused(t *testing.T) {
	t.Parallel()
	srv := startJWTServer(t)
	cfg := config(srv.URL(), "eve")
	cfg.Token = func(context.Context) (string, error) {
		return auth.IssueHS256([]byte("not-the-servers-secret-0123456789abcdef"), auth.Grant{User: "eve", TTL: time.Hour})
	}
	eve, err := client.Dial(context.Background(), cfg)
	if err == nil {
		t.Cleanup(func() { _ = eve.Close() })
		select {
		case <-eve.Done():
		case <-time.After(wait):
			t.Fatal("client still running with a refused token")
		}
		err = eve.Err()
	}
	if !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}

	var n atomic.Int64
	rcfg := config(srv.URL(), "carol")
	rcfg.Token = func(ctx context.Context) (string, error) {
		n.Add(1)
		return auth.IssueHS256([]byte(jwtSecret), auth.Grant{User: "carol", TTL: time.Hour, Rooms: []string{"lobby", "news"}, Publish: []string{"lobby"}})
	}
	carol := dial(t, rcfg)
	join(t, carol, "news", client.JoinOptions{})
	_, err = carol.Send(context.Background(), "news", "hi")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != client.CodeForbidden {
		t.Fatalf("send to news: got %v, want CodeForbidden", err)
	}
	err = carol.Join(context.Background(), "secret", client.JoinOptions{})
	if !errors.As(err, &ce) || ce.Code != client.CodeForbidden {
		t.Fatalf("join secret: got %v, want CodeForbidden", err)
	}
}
