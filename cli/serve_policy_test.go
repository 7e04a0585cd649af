package cli

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/internal/wstest"
)

// TestServeReloadsRoomsPolicy: serve rereads --rooms-policy on SIGHUP, and
// keeps the policy in force when the file has become invalid.
func TestServeReloadsRoomsPolicy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policy := modWrite(t, dir, "policy.yaml", "rooms:\n  - room: lobby\n")
	var logs syncbuf.Buffer
	c := serveAndDial(t, slog.New(slog.NewTextHandler(&logs, nil)), "alice", "--rooms-policy", policy)
	// join answers joined or an error for room.
	join := func(room string) wstest.Frame {
		t.Helper()
		if err := c.Join(room, 0); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool {
			return f.Room == room && (f.Type == "joined" || f.Type == "error")
		}, modWait)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	hangup := func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if f := join("garden"); f.Type != "error" || f.Code != "forbidden" {
		t.Fatalf("garden before the reload: got %s, want forbidden", f.Raw)
	}
	modWrite(t, dir, "policy.yaml", "rooms:\n  - room: lobby\n  - room: garden\n")
	hangup()
	deadline := time.Now().Add(modWait)
	for join("garden").Type != "joined" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the rooms policy")
		}
		time.Sleep(100 * time.Millisecond) // within the connection's frame rate
	}
	modWrite(t, dir, "policy.yaml", "rooms:\n  - room: lobby\n    join: nope\n")
	hangup()
	deadline = time.Now().Add(modWait)
	for !strings.Contains(logs.String(), "rooms policy reload failed") || !strings.Contains(logs.String(), "policy.yaml:3:") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for the broken policy file:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The policy in force still refuses rooms it has no rule for (no
	// policy at all would allow them).
	if f := join("attic"); f.Type != "error" || f.Code != "forbidden" {
		t.Fatalf("attic after a reload of a broken file: got %s, want forbidden by the previous policy", f.Raw)
	}
}
