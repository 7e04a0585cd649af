package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHangupKeepsServing: SIGHUP to a server with nothing to reload (no
// --moderation, no --rooms-policy) is logged and changes nothing; by
// default SIGHUP would end the process.
func TestHangupKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "stderr")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := startServe(t, f, "info")
	logs := func() string {
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for range 2 {
		if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs(), "nothing to reload"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-srv.exited:
			t.Fatalf("server ended on SIGHUP: %v; log:\n%s", err, logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line about SIGHUP within 5s; log:\n%s", logs())
		}
	}
	select {
	case err := <-srv.exited:
		t.Fatalf("server ended after SIGHUP: %v; log:\n%s", err, logs())
	case <-time.After(200 * time.Millisecond):
	}
	if !srv.ready() {
		t.Fatalf("server not ready after SIGHUP; log:\n%s", logs())
	}
}
