package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/syncbuf"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// wait bounds every expected event.
const wait = 5 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// toolFixture is a Redis with a prefix of its own and a backend on it.
type toolFixture struct {
	rs *testredis.Server
	b  *redisstore.Backend
}

func newToolFixture(t *testing.T) *toolFixture {
	t.Helper()
	rs := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &toolFixture{rs: rs, b: b}
}

func (f *toolFixture) flags() redisFlags {
	return redisFlags{Redis: f.rs.URL, RedisPrefix: f.rs.Prefix, Partitions: 4}
}

// args returns the connection flags for a command line.
func (f *toolFixture) args() []string {
	return []string{"--redis", f.rs.URL, "--redis-prefix", f.rs.Prefix, "--partitions", "4"}
}

// seed stores a message through Backend.Append and returns its seq.
func (f *toolFixture) seed(t *testing.T, room, user, text string, at time.Time) string {
	t.Helper()
	m := message.NewMessage(fmt.Sprintf("id-%d", time.Now().UnixNano()), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaReceivedAt, at.UTC().Format(time.RFC3339Nano))
	a, err := f.b.Append(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return a.Seq
}

func bufferIO() (toolIO, *syncbuf.Buffer, *syncbuf.Buffer) {
	var out, errs syncbuf.Buffer
	return toolIO{Stdout: &out, Stderr: &errs, Log: quiet}, &out, &errs
}

// TestToolExitCodes: the documented exit codes, through the command line.
func TestToolExitCodes(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	seq := f.seed(t, "lobby", "alice", "hi", time.Now())
	unreachable := []string{"--redis", "redis://127.0.0.1:1/0"}
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"replay ok", append([]string{"replay", "--room", "lobby", "--since", seq, "--until", seq, "--grep", "^zz"}, f.args()...), 0},
		{"unknown room", append([]string{"replay", "--room", "nowhere"}, f.args()...), exitNotFound},
		{"wrong partition count finds no room", []string{"replay", "--room", "lobby", "--redis", f.rs.URL, "--redis-prefix", f.rs.Prefix, "--partitions", "7"}, exitNotFound},
		{"bad since", append([]string{"replay", "--room", "lobby", "--since", "yesterday"}, f.args()...), exitUsage},
		{"reversed range", append([]string{"replay", "--room", "lobby", "--since", "9-0", "--until", "5-0"}, f.args()...), exitUsage},
		{"bad grep", append([]string{"replay", "--room", "lobby", "--grep", "("}, f.args()...), exitUsage},
		{"no room", append([]string{"replay"}, f.args()...), exitUsage},
		{"room and all rooms", append([]string{"replay", "--room", "lobby", "--all-rooms"}, f.args()...), exitUsage},
		{"into itself", append([]string{"replay", "--room", "lobby", "--into", "lobby"}, f.args()...), exitUsage},
		{"bad speed", append([]string{"replay", "--room", "lobby", "--into", "b", "--speed", "fast"}, f.args()...), exitUsage},
		{"follow with until", append([]string{"replay", "--room", "lobby", "--follow", "--until", seq}, f.args()...), exitUsage},
		{"invalid room name", append([]string{"replay", "--room", "no spaces"}, f.args()...), exitUsage},
		{"replay unreachable", append([]string{"replay", "--room", "lobby"}, unreachable...), exitUnavailable},
		{"rejected unknown ID", append([]string{"rejected", "--requeue", "1-1"}, f.args()...), exitNotFound},
		{"rejected bad ID", append([]string{"rejected", "--requeue", "x"}, f.args()...), exitUsage},
		{"requeue without a moderation choice", append([]string{"rejected", "--requeue-all"}, f.args()...), exitUsage},
		{"into without a moderation choice", append([]string{"replay", "--room", "lobby", "--into", "b"}, f.args()...), exitUsage},
		{"rejected bad since", append([]string{"rejected", "--since", "soon"}, f.args()...), exitUsage},
		{"rejected unreachable", append([]string{"rejected"}, unreachable...), exitUnavailable},
		{"streams unreachable", append([]string{"streams"}, unreachable...), exitUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Run(context.Background(), tc.args, io.Discard, io.Discard); got != tc.want {
				t.Fatalf("exit code %d, want %d", got, tc.want)
			}
		})
	}
}

// TestReplayCommand: text and jsonl output, a follow, and --into.
func TestReplayCommand(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	base := time.Date(2026, 11, 26, 3, 0, 1, 123e6, time.UTC)
	var seqs []string
	for i, m := range []struct{ room, user, text string }{
		{"lobby", "alice", "hi"}, {"dev", "bob", "two\nlines"}, {"lobby", "carol", "bye"},
	} {
		seqs = append(seqs, f.seed(t, m.room, m.user, m.text, base.Add(time.Duration(i)*time.Second)))
		time.Sleep(2 * time.Millisecond) // rooms of different partitions can share a seq within one millisecond
	}

	t.Run("text", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := replayCmd{Conn: f.flags(), AllRooms: true, Format: "text", Speed: "1x"}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		want := "2026-11-26T03:00:01.123Z lobby alice: hi\n" +
			"2026-11-26T03:00:02.123Z dev bob: two\\nlines\n" +
			"2026-11-26T03:00:03.123Z lobby carol: bye\n"
		if got := out.String(); got != want {
			t.Fatalf("got\n%swant\n%s", got, want)
		}
	})

	t.Run("jsonl", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := replayCmd{Conn: f.flags(), Room: "lobby", User: "carol", Format: "jsonl", Speed: "1x"}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		var rec replay.MessageRecord
		if err := json.Unmarshal([]byte(out.String()), &rec); err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		if rec.Seq != seqs[2] || rec.Room != "lobby" || rec.User != "carol" || rec.Text != "bye" || rec.TS != "2026-11-26T03:00:03.123Z" || rec.ID == "" {
			t.Fatalf("record = %+v", rec)
		}
	})

	t.Run("follow", func(t *testing.T) {
		tio, out, _ := bufferIO()
		c := replayCmd{Conn: f.flags(), Room: "lobby", Follow: true, Format: "text", Speed: "1x"}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.run(ctx, tio) }()
		defer func() { cancel(); <-done }()
		awaitLines(t, out, 2)
		f.seed(t, "lobby", "dave", "live", base.Add(3*time.Second))
		lines := awaitLines(t, out, 3)
		if lines[2] != "2026-11-26T03:00:04.123Z lobby dave: live" {
			t.Fatalf("followed line %q", lines[2])
		}
		cancel()
		select {
		case err := <-done:
			done <- err
			if err != nil {
				t.Fatalf("follow ended with %v, want nil", err)
			}
		case <-time.After(wait):
			t.Fatal("follow did not stop")
		}
	})

	t.Run("into", func(t *testing.T) {
		tio, out, errs := bufferIO()
		c := replayCmd{Conn: f.flags(), Room: "lobby", Until: seqs[2], Into: "lobby-copy", Format: "text", Speed: "max", NoModeration: true}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatalf("%v (stderr %s)", err, errs)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "lobby/"+seqs[0]+" -> lobby-copy/") || !strings.Contains(errs.String(), "replayed 2 messages") {
			t.Fatalf("stdout %q, stderr %q", out, errs)
		}
		tio, out, _ = bufferIO()
		c = replayCmd{Conn: f.flags(), Room: "lobby-copy", Format: "jsonl", Speed: "1x"}
		if err := c.run(context.Background(), tio); err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var rec replay.MessageRecord
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			if want := "lobby/" + seqs[2*i]; rec.Meta[replay.MetaReplayedFrom] != want || rec.User != []string{"alice", "carol"}[i] {
				t.Fatalf("copy %d = %+v, want replayed_from %s", i, rec, want)
			}
		}
	})

	t.Run("into with a refusal", func(t *testing.T) {
		f.seed(t, "odd", " spaced ", "invalid user", base) // stored raw, refused by validation when replayed
		tio, out, _ := bufferIO()
		c := replayCmd{Conn: f.flags(), Room: "odd", Into: "odd-copy", Format: "jsonl", Speed: "max", NoModeration: true}
		err := c.run(context.Background(), tio)
		if exitCode(err) != exitRefused {
			t.Fatalf("err %v (exit %d), want exit %d", err, exitCode(err), exitRefused)
		}
		var res replay.Result
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil || res.Error == nil || res.Error.Code != pipeline.CodeInvalid {
			t.Fatalf("result %q (%v)", out, err)
		}
	})
}

// awaitLines waits until out holds n lines and returns them.
func awaitLines(t *testing.T, out *syncbuf.Buffer, n int) []string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if s := out.String(); strings.Count(s, "\n") >= n {
			return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %q, want %d lines", out, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestQuietPipe: a write to a closed pipe ends the command quietly.
func TestQuietPipe(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_ = r.Close() // the reader goes away, like `| head`
	err = quietPipe(func() error {
		p := replay.NewPrinter(w, "text", true)
		return p.Message(replay.Entry{Room: "r", User: "u", Text: "t"})
	})
	if err != nil {
		t.Fatalf("got %v, want nil", err)
	}
	if err := quietPipe(func() error { return errors.New("other") }); err == nil {
		t.Fatal("other errors must stay")
	}
}

// TestRedisPasswordRedacted: the tools' errors about --redis never print
// its password.
func TestRedisPasswordRedacted(t *testing.T) {
	t.Parallel()
	config := modWrite(t, t.TempDir(), "mod.yaml", modConfig)
	for _, tc := range []struct {
		name, url string
		want      int
	}{
		{"unreachable", "redis://u:hunter2@127.0.0.1:1/0", exitUnavailable},
		{"cluster list unreachable", "redis://u:hunter2@127.0.0.1:1,127.0.0.1:2", exitUnavailable},
		{"not a URL", "u:hunter2@127.0.0.1:1", exitUsage},
		{"unparsable", "redis://u:hunter2@[::1", exitUsage},
		{"quoted by the parser", "redis://:hunter2\"x@127.0.0.1:x/0", exitUsage},
		{"control character", "redis://:hunter2\tx@127.0.0.1:x/0", exitUsage},
		{"list with a path", "redis://:hunter2@127.0.0.1:6/0,redis://:hunter2@127.0.0.2:6/0", exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{{"replay", "--room", "lobby"}, {"rejected"}, {"streams"}, {"moderation", "test", "--config", config, "--room", "lobby"}} {
				var stderr strings.Builder
				code := Run(context.Background(), append(cmd, "--redis", tc.url), io.Discard, &stderr)
				if code != tc.want || strings.Contains(stderr.String(), "hunter2") || !strings.Contains(stderr.String(), "chatstream:") {
					t.Fatalf("%s: exit %d, stderr %q; want exit %d, no password", cmd[0], code, stderr.String(), tc.want)
				}
			}
		})
	}
}
