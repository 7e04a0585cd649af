package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/cli"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
)

const wait = 10 * time.Second

const config = `moderators:
  - kind: mute
    users: [mallory]
    reason: you are muted here
  - kind: wordlist
    words: [darn]
`

// TestMuteKind builds a chain from a configuration that names the custom
// kind and checks its decisions.
func TestMuteKind(t *testing.T) {
	c, err := moderation.Parse([]byte(config), "mod.yaml", moderation.Env{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, text string
		action           moderation.Action
		moderator, want  string
	}{
		{"muted user", "mallory", "hello", moderation.Reject, "mute", "you are muted here"},
		{"other user", "alice", "hello", moderation.Accept, "", "hello"},
		{"built-in kind after it", "alice", "darn", moderation.Rewrite, "wordlist", "****"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := c.Evaluate(context.Background(), moderation.Message{User: tt.user, Room: "lobby", Text: tt.text})
			got := res.Text
			if res.Action == moderation.Reject {
				got = res.Reason
			}
			if res.Action != tt.action || res.Moderator != tt.moderator || got != tt.want {
				t.Fatalf("got %v by %q: %q, want %v by %q: %q", res.Action, res.Moderator, got, tt.action, tt.moderator, tt.want)
			}
		})
	}
	if _, err := moderation.Parse([]byte("moderators:\n  - kind: mute\n"), "mod.yaml", moderation.Env{}); err == nil ||
		!strings.Contains(err.Error(), `mod.yaml:2: mute "mute": give at least one user to mute`) {
		t.Fatalf("mute without users: %v", err)
	}
}

func TestHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := cli.Run(context.Background(), []string{"serve", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("serve --help exited %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "--moderation") {
		t.Fatalf("help:\n%s", out.String())
	}
	// The custom kind is known to the tools too.
	path := filepath.Join(t.TempDir(), "moderation.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := cli.Run(context.Background(), []string{"moderation", "check", path}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "mute") {
		t.Fatalf("moderation check exited %d:\n%s%s", code, out.String(), errOut.String())
	}
}

// TestServe runs the example's main loop on a free port: a muted user's
// message is rejected by the custom moderator, another user's is stored.
func TestServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moderation.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- cli.Run(ctx, []string{"serve", "--addr", addr, "--internal-addr=", "--moderation", path}, &bytes.Buffer{}, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
	dial := func(user string) *wstest.Client {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			c, err := wstest.Dial("http://"+addr, user)
			if err == nil {
				t.Cleanup(c.Close)
				if err := c.Join("lobby", 0); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Await("joined", wait); err != nil {
					t.Fatal(err)
				}
				return c
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, tt := range []struct{ user, typ, code, reason string }{
		{"mallory", "error", pipeline.CodeRejected, "you are muted here"},
		{"alice", "ack", "", ""},
	} {
		c := dial(tt.user)
		ref := fmt.Sprint("from-", tt.user)
		if err := c.Say("lobby", "hello", ref); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, wait)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != tt.typ || f.Code != tt.code || f.Message != tt.reason || (tt.code != "" && f.Moderator != MuteKind) {
			t.Fatalf("%s got %s", tt.user, f.Raw)
		}
	}
}
