package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/server"
)

// TestRunUsage: --help lists the commands and exits 0; a bad flag exits 2
// with a message.
func TestRunUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help exited %d: %s", code, errOut.String())
	}
	for _, cmd := range []string{"serve", "healthcheck", "moderation", "replay", "rejected", "streams"} {
		if !strings.Contains(out.String(), cmd) {
			t.Errorf("help does not list %s:\n%s", cmd, out.String())
		}
	}
	errOut.Reset()
	if code := Run(context.Background(), []string{"serve", "--no-such-flag"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "no-such-flag") {
		t.Fatalf("bad flag exited %d: %s", code, errOut.String())
	}
	// Flags that cannot work together are a usage error too, found before
	// anything starts.
	errOut.Reset()
	if code := Run(context.Background(), []string{"serve", "--auth", "jwt", "--addr", "127.0.0.1:0", "--internal-addr="}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "--jwt-secret-file") {
		t.Fatalf("--auth jwt without a key exited %d: %s", code, errOut.String())
	}
	// A negative duration is refused, not read as "forever" or "default".
	for _, flag := range []string{"--room-ttl", "--idempotency-window"} {
		errOut.Reset()
		if code := Run(context.Background(), []string{"serve", flag, "-1h", "--addr", "127.0.0.1:0", "--internal-addr="}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), flag+" (CHATSTREAM_") {
			t.Fatalf("serve %s -1h exited %d: %s", flag, code, errOut.String())
		}
	}
}

// TestNegativeDurationValue: "--since -15m" is a value, not a flag: the
// command gets as far as Redis (exit 4 for an unreachable one), not a usage
// error.
func TestNegativeDurationValue(t *testing.T) {
	var errOut bytes.Buffer
	code := Run(context.Background(), []string{"replay", "--room", "lobby", "--since", "-15m", "--redis", "redis://127.0.0.1:1/0"}, io.Discard, &errOut)
	if code != exitUnavailable {
		t.Fatalf("exit code %d, want %d (Redis unreachable): %s", code, exitUnavailable, errOut.String())
	}
}

// TestHealthcheck: 0 against a ready gateway, 1 against a closed port.
func TestHealthcheck(t *testing.T) {
	srv := testserver.Start(t, server.Config{})

	if code := Run(context.Background(), []string{"healthcheck", "--addr", srv.Addr().String()}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("healthcheck of a ready gateway exited %d", code)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	var errOut bytes.Buffer
	if code := Run(context.Background(), []string{"healthcheck", "--addr", closed, "--timeout", time.Second.String()}, io.Discard, &errOut); code != 1 {
		t.Fatalf("healthcheck of a closed port exited %d: %s", code, errOut.String())
	}
}

// TestRoomTTLFlag: --room-ttl 0 keeps rooms forever (the backend's
// NoRoomTTL), any other value is passed on.
func TestRoomTTLFlag(t *testing.T) {
	t.Parallel()
	if got := roomTTL(0); got != pipeline.NoRoomTTL {
		t.Fatalf("roomTTL(0) = %v, want NoRoomTTL", got)
	}
	if got := roomTTL(time.Hour); got != time.Hour {
		t.Fatalf("roomTTL(1h) = %v, want 1h", got)
	}
}

// TestVersion: --version and the version command print the build.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out, errOut strings.Builder
		if code := Run(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
		if got := out.String(); !strings.HasPrefix(got, "chatstream ") || !strings.Contains(got, runtime.Version()) {
			t.Fatalf("%v printed %q, want the version line", args, got)
		}
	}
}
