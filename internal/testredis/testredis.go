// Package testredis gives tests a real Redis: a private redis-server started
// in a temporary directory, or the server named by CHATSTREAM_TEST_REDIS_URL
// with a unique key prefix. Without either, tests skip locally and fail
// when the CI environment variable is set.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// EnvURL names an existing Redis to use instead of starting one.
const EnvURL = "CHATSTREAM_TEST_REDIS_URL"

// Server is a Redis for one test.
type Server struct {
	// URL is redis://host:port/db.
	URL string
	// Socket is the path of the server's Unix socket (Options.UnixSocket),
	// and SocketURL unix://<Socket>?db=0; both empty without one.
	Socket, SocketURL string
	// Prefix is a key prefix unique to the test.
	Prefix string

	t    testing.TB
	dir  string
	port int
	aof  bool

	// mu guards cmd.
	mu  sync.Mutex
	cmd *exec.Cmd
}

// Options adjust a private server.
type Options struct {
	// AOF turns on the append-only file (fsync always) so a restart keeps
	// every acknowledged write.
	AOF bool
	// UnixSocket makes the server listen on a Unix socket too
	// (Server.SocketURL). A shared server (CHATSTREAM_TEST_REDIS_URL)
	// cannot: the test is skipped, as tests that restart the server are.
	UnixSocket bool
}

// Start returns a Redis for t, stopped in t.Cleanup.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	prefix := "t" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	if u := os.Getenv(EnvURL); u != "" {
		if o.UnixSocket {
			t.Skipf("a Unix socket needs a private redis-server, and %s names a shared one", EnvURL)
		}
		return &Server{URL: u, Prefix: prefix, t: t}
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is not installed and %s is not set; CI must provide Redis", EnvURL)
		}
		t.Skipf("redis-server not found and %s not set", EnvURL)
	}
	s := &Server{Prefix: prefix, t: t, dir: t.TempDir(), aof: o.AOF, port: freePort(t)}
	s.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", s.port)
	if o.UnixSocket {
		s.Socket = filepath.Join(s.dir, "redis.sock")
		s.SocketURL = "unix://" + s.Socket + "?db=0"
	}
	s.start(bin)
	t.Cleanup(s.Stop)
	return s
}

// Private reports whether the server was started for this test (and so can
// be stopped and restarted).
func (s *Server) Private() bool { return s.dir != "" }

func (s *Server) start(bin string) {
	s.t.Helper()
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.Socket != "" {
		args = append(args, "--unixsocket", s.Socket, "--unixsocketperm", "700")
	}
	if s.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port)})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server did not answer: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops a private server (a no-op for a shared one or when stopped).
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server must run to exit
	_ = cmd.Process.Signal(os.Interrupt)    // redis-server exits cleanly on SIGINT
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a stopped server is not interesting
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts a stopped private server again on the same port and
// directory (so an AOF server keeps its data).
func (s *Server) Restart() {
	s.t.Helper()
	if !s.Private() {
		s.t.Fatal("testredis: cannot restart a shared Redis")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatal(err)
	}
	s.start(bin)
}

// Kill ends a private server with SIGKILL: nothing is saved, and without
// AOF it restarts empty.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // an already finished process is fine
	_ = cmd.Wait()         // its exit status is SIGKILL's
}

// Pause stops a private server's process with SIGSTOP: it keeps its
// connections but answers nothing until Resume.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("testredis: the server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("testredis: signal %v: %v", sig, err)
	}
}

// Client returns a client of the server, closed in t.Cleanup.
func (s *Server) Client() *redis.Client {
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(opt)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
