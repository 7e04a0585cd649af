package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
)

// buildBinary builds the chatstream binary into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chatstream")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// served is a chatstream serve process started by startServe.
type served struct {
	cmd  *exec.Cmd
	base string // http://addr
	// exited receives cmd.Wait's error once, then is closed.
	exited chan error
}

// startServe builds the binary and runs "chatstream --log-level level
// serve" on a free loopback port with serve's flags, its stderr to
// stderr, and waits until /readyz answers 200. Cleanup stops it.
func startServe(t *testing.T, stderr io.Writer, level string, flags ...string) *served {
	t.Helper()
	bin := buildBinary(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--log-level", level, "serve", "--addr", addr, "--internal-addr="}, flags...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, base: "http://" + addr, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { cancel(); <-s.exited })
	for deadline := time.Now().Add(10 * time.Second); !s.ready(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("server not ready within 10s")
		}
	}
	return s
}

// ready reports whether the server's /readyz answers 200.
func (s *served) ready() bool {
	resp, err := http.Get(s.base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestChaosAmplification: a room of 1,000 texts of 4 KiB of "<" (each
// escapes to six times its size) and several sockets that never read,
// re-joining with since 0-0 in a loop for 5 s, keep the server process's
// RSS growth under 100 MB, while another client's sends are acked.
func TestChaosAmplification(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	srv := startServe(t, os.Stderr, "error", "--frame-rate", "10000", "--frame-burst", "10000", "--max-text", "4096")
	cmd, base := srv.cmd, srv.base

	// Fill the room.
	filler, err := wstest.Dial(base, "filler")
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if err := filler.Join("lobby", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := filler.Await("joined", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("<", 4096)
	for i := range 1000 {
		if err := filler.Say("lobby", text, fmt.Sprint("f", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := filler.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" && f.Ref == fmt.Sprint("f", i) }, 10*time.Second); err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
	filler.Close()
	before := rssBytes(t, cmd.Process.Pid)

	// The attack: sockets that never read, joining with since 0-0 again
	// and again, each re-dialled when the server drops it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var joins atomic.Int64
	for range 5 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?user=mallory", nil)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				for {
					_ = c.SetWriteDeadline(time.Now().Add(time.Second))
					if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"lobby","since":"0-0"}`)); err != nil {
						break
					}
					joins.Add(1)
					select {
					case <-stop:
						_ = c.Close()
						return
					default:
					}
				}
				_ = c.Close()
			}
		})
	}
	// Meanwhile another client chats.
	alice, err := wstest.Dial(base, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if err := alice.Join("chat", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Await("joined", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	peak := before
	end := time.Now().Add(5 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		ref := fmt.Sprint("a", i)
		if err := alice.Say("chat", "hello", ref); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" && f.Ref == ref }, 5*time.Second); err != nil {
			t.Fatalf("alice's send %d during the attack: %v", i, err)
		}
		peak = max(peak, rssBytes(t, cmd.Process.Pid))
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	growth := peak - before
	t.Logf("RSS %d MB before the attack, peak %d MB (+%d MB) over %d joins", before>>20, peak>>20, growth>>20, joins.Load())
	if growth > 100<<20 {
		t.Fatalf("RSS grew by %d MB under the amplification attack, want < 100 MB", growth>>20)
	}
}
