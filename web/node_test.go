package web_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// nodeTimeout bounds the whole Node test run.
const nodeTimeout = 90 * time.Second

// nodeDetectsESM reports whether Node.js major.minor loads an ES module
// from a .js file outside any "type": "module" package without flags, as
// the tests import static/chatstream-client.js: from 20.19 in the 20 line,
// from 22.7, and in every line after 22.
func nodeDetectsESM(major, minor int) bool {
	switch {
	case major == 20:
		return minor >= 19
	case major == 22:
		return minor >= 7
	}
	return major > 22
}

// TestNodeClient runs the Node tests of the JavaScript client (test/*.test.mjs)
// against a real server started here; their output is the failure message.
func TestNodeClient(t *testing.T) {
	t.Parallel()
	node := requireTool(t, "node", "node")
	requireNodeVersion(t, node)
	files, err := filepath.Glob(filepath.Join("test", "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Node tests in test/: %v", err)
	}
	base := startInstances(t, 1)[0]

	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	args := []string{"--test"}
	if !nodeHasWebSocket(ctx, node) {
		args = append([]string{"--experimental-websocket"}, args...)
	}
	cmd := exec.CommandContext(ctx, node, append(args, files...)...)
	cmd.Env = append(os.Environ(), "CHATSTREAM_URL="+base, "NO_COLOR=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %v: %v after %s\n%s", args, err, time.Since(start).Round(time.Millisecond), out)
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("# tests")) || bytes.HasPrefix(line, []byte("# pass")) || bytes.HasPrefix(line, []byte("ℹ tests")) || bytes.HasPrefix(line, []byte("ℹ pass")) {
			t.Logf("%s", line)
		}
	}
}

// nodeHasWebSocket reports whether node has a global WebSocket without flags
// (Node 22 and later).
func nodeHasWebSocket(ctx context.Context, node string) bool {
	return exec.CommandContext(ctx, node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)").Run() == nil
}

// requireNodeVersion skips (or, under CI, fails) when node cannot load the
// client module.
func requireNodeVersion(t *testing.T, node string) {
	t.Helper()
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	m := regexp.MustCompile(`^v(\d+)\.(\d+)\.`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("node --version printed %q", out)
	}
	major, _ := strconv.Atoi(string(m[1])) // the pattern admits digits only
	minor, _ := strconv.Atoi(string(m[2]))
	if nodeDetectsESM(major, minor) {
		return
	}
	msg := "node " + string(bytes.TrimSpace(out)) + " cannot load ES modules from .js files; use 20.19+ or 22.7+"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
