package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/dryrun"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// modWait bounds every expected event of these tests.
const modWait = 10 * time.Second

var modQuiet = slog.New(slog.DiscardHandler)

// modConfig is the chain the dry-run tests replay traffic through.
const modConfig = `moderators:
  - kind: wordlist
    name: profanity
    words: [darn]
  - kind: rules
    name: spam
    rules:
      - name: crypto
        when: text.matches("(?i)free\\s+crypto")
        action: reject
        reason: no crypto offers
  - kind: flood
    max_repeats: 1
`

func modWrite(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// modParse parses a command line like main does and returns the command.
func modParse(t *testing.T, args ...string) (*cli, *kong.Context) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("chatstream"),
		kong.WithHyphenPrefixedParameters(true),
		kong.Exit(func(int) { t.Fatal("kong exited") }),
		defaults(),
	)
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return &c, kctx
}

func TestModerationCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	modWrite(t, dir, "words.txt", "darn\nheck\n")
	modWrite(t, dir, "rules.yaml", "rules:\n  - name: crypto\n    when: text.contains(\"crypto\")\n    action: reject\n")
	tests := []struct {
		name, config string
		code         int
		want         []string // in stdout (valid) or the error (invalid)
		file         string   // of the *moderation.ConfigError (invalid)
		line         int      // of the *moderation.ConfigError (invalid)
		is           error    // the error matches (invalid)
	}{
		{
			name: "valid",
			config: "moderators:\n  - kind: wordlist\n    name: profanity\n    file: words.txt\n  - kind: rules\n    file: rules.yaml\n" +
				"  - kind: ratelimit\n    per_user: {rate: 5, per: 10s}\n    per_conn: {rate: 10, per: 10s}\n    on_error: accept\n",
			want: []string{
				"valid, 3 moderators, run in this order:",
				"1.  profanity  wordlist   on_error=reject  action=mask entries=2 file=" + filepath.Join(dir, "words.txt"),
				"2.  rules      rules      on_error=reject  rules=1 [crypto]",
				"3.  ratelimit  ratelimit  on_error=accept  per_user=5/10s burst 5",
				"per_conn=10/10s burst 10 (in memory)",
			},
		},
		{name: "empty", config: "moderators: []\n", want: []string{"valid, no moderators"}},
		{name: "unknown kind", config: "moderators:\n  - kind: wordlist\n    words: [a]\n  - kind: nope\n", code: 1, want: []string{"mod.yaml:4: unknown kind \"nope\""}, file: "mod.yaml", line: 4},
		{name: "broken rules file", config: "moderators:\n  - kind: rules\n    file: broken.yaml\n", code: 1, want: []string{"broken.yaml:3: rule \"x\": when: undeclared reference to 'txt'"}, file: "broken.yaml", line: 3},
		{name: "missing file", config: "", code: 1, want: []string{"no such file"}, is: fs.ErrNotExist},
	}
	modWrite(t, dir, "broken.yaml", "rules:\n  - name: x\n    when: txt == \"a\"\n    action: reject\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing.yaml")
			if tt.config != "" {
				path = modWrite(t, dir, "mod.yaml", tt.config)
			}
			_, kctx := modParse(t, "moderation", "check", path)
			if kctx.Command() != "moderation check <file>" {
				t.Fatalf("command = %q", kctx.Command())
			}
			var out bytes.Buffer
			err := (&moderationCheckCmd{File: path}).run(&out, modQuiet)
			got := out.String()
			if tt.code != 0 {
				if err == nil || exitCode(err) != tt.code {
					t.Fatalf("err = %v (exit %d), want exit %d", err, exitCode(err), tt.code)
				}
				got = err.Error()
				var ce *moderation.ConfigError
				switch {
				case tt.line > 0 && (!errors.As(err, &ce) || filepath.Base(ce.File) != tt.file || ce.Line != tt.line):
					t.Errorf("err = %v (%T), want a *moderation.ConfigError at %s:%d", err, err, tt.file, tt.line)
				case tt.is != nil && !errors.Is(err, tt.is):
					t.Errorf("err = %v, want it to match %v", err, tt.is)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("output:\n%s\nwant it to contain %q", got, w)
				}
			}
		})
	}
}

// modFixture is a Redis with traffic recorded by the redisstore backend.
type modFixture struct {
	rs  *testredis.Server
	b   *redisstore.Backend
	dir string
}

func newModFixture(t *testing.T) *modFixture {
	t.Helper()
	rs := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: modQuiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f := &modFixture{rs: rs, b: b, dir: t.TempDir()}
	modWrite(t, f.dir, "mod.yaml", modConfig)
	return f
}

// append stores a message as the pipeline would and returns its seq, read
// back as the newest entry ID of the room stream.
func (f *modFixture) append(t *testing.T, room, user, text string) string {
	t.Helper()
	m := message.NewMessage(fmt.Sprintf("%s-%d", user, time.Now().UnixNano()), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "conn-"+user)
	m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	ctx := context.Background()
	if _, err := f.b.Append(ctx, m); err != nil {
		t.Fatal(err)
	}
	last, err := f.b.Client().XRevRangeN(ctx, f.b.Keys().Room(room), "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		t.Fatalf("newest entry of room %s: %v, %v", room, last, err)
	}
	return last[0].ID
}

// seed records the traffic the tests replay.
func (f *modFixture) seed(t *testing.T) {
	t.Helper()
	for _, m := range [][3]string{
		{"lobby", "alice", "hello"},
		{"lobby", "bob", "FREE  crypto now"},
		{"general", "dave", "hi there"},
		{"lobby", "alice", "well darn it"},
		{"lobby", "carol", "again"},
		{"lobby", "carol", "AGAIN!"},
	} {
		f.append(t, m[0], m[1], m[2])
		// Rooms have streams of their own, whose IDs are ordered only by
		// their millisecond: keep the messages a millisecond apart.
		time.Sleep(2 * time.Millisecond)
	}
}

func (f *modFixture) cmd(args ...string) *moderationTestCmd {
	c := &moderationTestCmd{
		Config: filepath.Join(f.dir, "mod.yaml"), Since: "1h", Width: 60, Batch: 2,
		Redis: f.rs.URL, RedisPrefix: f.rs.Prefix, Partitions: 4,
	}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--room":
			i++
			c.Room = append(c.Room, args[i])
		case "--all-rooms":
			c.AllRooms = true
		case "--json":
			c.JSON = true
		case "--since":
			i++
			c.Since = args[i]
		case "--until":
			i++
			c.Until = args[i]
		}
	}
	return c
}

func (f *modFixture) run(t *testing.T, c *moderationTestCmd) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := c.run(context.Background(), &out, io.Discard, modQuiet)
	return out.String(), err
}

// TestModerationDryRunReadOnly runs the dry run as a Redis user that may
// only read: any write would fail it.
func TestModerationDryRunReadOnly(t *testing.T) {
	t.Parallel()
	f := newModFixture(t)
	if !f.rs.Private() {
		t.Skip("needs a private redis-server to add a user")
	}
	f.seed(t)
	ctx := context.Background()
	err := f.rs.Client().Do(ctx, "ACL", "SETUSER", "reader", "on", ">secret", "~*", "&*", "-@all", "+@read", "+@connection", "+info").Err()
	if err != nil {
		t.Fatal(err)
	}
	c := f.cmd("--all-rooms")
	c.Redis = strings.Replace(f.rs.URL, "redis://", "redis://reader:secret@", 1)
	if ok, err := f.rs.Client().Do(ctx, "ACL", "DRYRUN", "reader", "XADD", "x", "*", "a", "b").Text(); err != nil || ok == "OK" {
		t.Fatalf("ACL DRYRUN XADD = %q, %v: the reader may write and the test proves nothing", ok, err)
	}
	out, err := f.run(t, c)
	if err != nil {
		t.Fatalf("dry run as a read-only user: %v", err)
	}
	if !strings.Contains(out, "6 messages in 2 rooms") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestModerationDryRunErrors(t *testing.T) {
	t.Parallel()
	f := newModFixture(t)
	f.seed(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "redis://" + l.Addr().String() + "/0"
	l.Close()
	tests := []struct {
		name   string
		modify func(*moderationTestCmd)
		code   int
		want   string
		is     error // the error matches, when not nil
	}{
		{"unknown room", func(c *moderationTestCmd) { c.Room = []string{"nowhere"} }, 3, `room "nowhere" has no stream in Redis`, nil},
		{"unknown room names rooms", func(c *moderationTestCmd) { c.Room = []string{"nowhere"} }, 3, "rooms: general, lobby", nil},
		{"wrong partitions", func(c *moderationTestCmd) { c.Room = []string{"lobby"}; c.Partitions = 7 }, 3, "has no stream", nil},
		{"unreachable redis", func(c *moderationTestCmd) { c.Room = []string{"lobby"}; c.Redis = closed }, 4, "cannot reach Redis at " + closed, pipeline.ErrUnavailable},
		{"bad since", func(c *moderationTestCmd) { c.Room = []string{"lobby"}; c.Since = "yesterday" }, 2, `--since: "yesterday": not an RFC 3339 time`, replay.ErrBadBound},
		{"bad until", func(c *moderationTestCmd) { c.Room = []string{"lobby"}; c.Until = "soon" }, 2, "--until:", replay.ErrBadBound},
		{"since after until", func(c *moderationTestCmd) { c.Room = []string{"lobby"}; c.Since = "1m"; c.Until = "2h" }, 2, "is after --until", nil},
		{"no room", func(*moderationTestCmd) {}, 2, "give --room ROOM (repeatable) or --all-rooms", nil},
		{"broken config", func(c *moderationTestCmd) {
			c.Room = []string{"lobby"}
			c.Config = modWrite(t, f.dir, "bad.yaml", "moderators:\n  - kind: flood\n    max_repeats: -1\n")
		}, 1, "bad.yaml:2: flood", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.cmd()
			tt.modify(c)
			_, err := f.run(t, c)
			if err == nil || exitCode(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v (exit %d), want exit %d with %q", err, exitCode(err), tt.code, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want it to match %v", err, tt.is)
			}
		})
	}
}

// TestModerationDryRunRange: --since and --until select by stream ID.
func TestModerationDryRunRange(t *testing.T) {
	t.Parallel()
	f := newModFixture(t)
	first := f.append(t, "lobby", "alice", "one")
	f.append(t, "lobby", "alice", "two")
	third := f.append(t, "lobby", "alice", "three")
	f.append(t, "lobby", "alice", "four")
	out, err := f.run(t, f.cmd("--room", "lobby", "--since", first, "--until", third, "--json"))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for line := range strings.Lines(out) {
		var m dryrun.Decision
		if err := json.Unmarshal([]byte(line), &m); err == nil && m.Type == "message" {
			texts = append(texts, m.Text)
		}
	}
	if strings.Join(texts, ",") != "one,two,three" {
		t.Fatalf("replayed %v, want one,two,three", texts)
	}
}

// TestServeModeration: serve refuses to start with a broken file (naming
// the line), and with a good one moderates, and reloads on SIGHUP.
func TestServeModeration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	broken := modWrite(t, dir, "broken.yaml", "moderators:\n  - kind: wordlist\n    action: erase\n    words: [a]\n")
	_, kctx := modParse(t, "serve", "--addr", "127.0.0.1:0", "--moderation", broken)
	err := kctx.Run(&globals{Log: modQuiet, Ctx: context.Background()})
	var ce *moderation.ConfigError
	if !errors.As(err, &ce) || ce.Line != 2 || !strings.Contains(err.Error(), "broken.yaml:2: wordlist") {
		t.Fatalf("serve with a broken file: %v, want a *moderation.ConfigError at broken.yaml:2", err)
	}

	modWrite(t, dir, "rules.yaml", "rules:\n  - name: one\n    when: text == \"one\"\n    action: reject\n    reason: not one\n")
	good := modWrite(t, dir, "good.yaml", "moderators:\n  - kind: rules\n    file: rules.yaml\n    poll: -1s\n")
	c := serveAndDial(t, modQuiet, "alice", "--moderation", good)
	if err := c.Join("lobby", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Await("joined", modWait); err != nil {
		t.Fatal(err)
	}
	say := func(text string) wstest.Frame {
		t.Helper()
		ref := fmt.Sprintf("r%d", time.Now().UnixNano())
		if err := c.Say("lobby", text, ref); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, modWait)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := say("one"); f.Code != pipeline.CodeRejected || f.Message != "not one" || f.Moderator != "rules" {
		t.Fatalf("got %s, want rejected by rules", f.Raw)
	}
	modWrite(t, dir, "rules.yaml", "rules:\n  - name: two\n    when: text == \"two\"\n    action: reject\n    reason: not two\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(modWait)
	for say("two").Type != "error" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the rules")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := say("one"); f.Type != "ack" {
		t.Fatalf("after the reload %q got %s, want ack", "one", f.Raw)
	}
}

// serveAndDial runs serve with args (and a free --addr, no internal
// listener) logging to log until the test ends, and returns a client
// connected to it as user.
func serveAndDial(t *testing.T, log *slog.Logger, user string, args ...string) *wstest.Client {
	t.Helper()
	// Tests send SIGHUP to the process: with a handler of the test's own,
	// a server that does not handle it fails its test instead of killing
	// the test binary.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, kctx := modParse(t, append([]string{"serve", "--addr", addr, "--internal-addr="}, args...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kctx.Run(&globals{Log: log, Ctx: ctx}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(modWait)
	for {
		c, err := wstest.Dial("http://"+addr, user)
		if err == nil {
			t.Cleanup(c.Close)
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
