package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestToolLimitFlagsMatchServe: the tools' limit flags have serve's names,
// environment variables and defaults, so a shell set up for an instance
// gives the tools the instance's limits.
func TestToolLimitFlagsMatchServe(t *testing.T) {
	t.Parallel()
	serve := reflect.TypeFor[serveCmd]()
	for _, tool := range []reflect.Type{reflect.TypeFor[trimFlags](), reflect.TypeFor[appendFlags]()} {
		for f := range tool.Fields() {
			if _, embedded := f.Tag.Lookup("embed"); embedded {
				continue
			}
			s, ok := serve.FieldByName(f.Name)
			if !ok {
				t.Errorf("%s.%s: serve has no such flag", tool.Name(), f.Name)
				continue
			}
			for _, tag := range []string{"env", "default"} {
				if got, want := f.Tag.Get(tag), s.Tag.Get(tag); got != want {
					t.Errorf("%s.%s %s:%q, want serve's %q", tool.Name(), f.Name, tag, got, want)
				}
			}
			if !s.Type.ConvertibleTo(f.Type) {
				t.Errorf("%s.%s is a %v, serve's a %v", tool.Name(), f.Name, f.Type, s.Type)
			}
		}
	}
}

// fillStream adds n entries to key, as a long-lived room or bus has.
func fillStream(t *testing.T, f *toolFixture, key string, n int) {
	t.Helper()
	ctx := context.Background()
	pipe := f.b.Client().Pipeline()
	for range n {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"payload", "old"}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestToolsAppendWithDeploymentLimits: replay --into and rejected
// --requeue append with the deployment's limits, given as serve's flags or
// its environment: a room kept longer than the default maxlen and without
// TTL keeps its entries and stays without TTL, its bus is not trimmed to
// the default, and a text longer than the default limit passes. With the
// defaults, the room and bus were trimmed to ~10,000, the room got a 720h
// TTL and the text was refused.
func TestToolsAppendWithDeploymentLimits(t *testing.T) {
	// Not parallel: the environment cases set CHATSTREAM_* variables.
	const (
		filled = 12_000 // more than the default maxlen
		text   = pipeline.DefaultMaxTextBytes + 1000
	)
	deployment := map[string]string{
		"CHATSTREAM_ROOM_MAXLEN": "50000", "CHATSTREAM_BUS_MAXLEN": "50000",
		"CHATSTREAM_ROOM_TTL": "0", "CHATSTREAM_MAX_TEXT": "8192",
	}
	var flags []string
	for env, v := range deployment {
		flags = append(flags, "--"+strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "CHATSTREAM_")), "_", "-"), v)
	}
	for _, tc := range []struct {
		name string
		env  bool
		args func(f *toolFixture) []string
	}{
		{"replay --into, flags", false, func(f *toolFixture) []string {
			return []string{"replay", "--room", "src", "--into", "big", "--speed", "max", "--no-moderation"}
		}},
		{"replay --into, environment", true, func(f *toolFixture) []string {
			return []string{"replay", "--room", "src", "--into", "big", "--speed", "max", "--no-moderation"}
		}},
		{"rejected --requeue, flags", false, func(f *toolFixture) []string {
			return []string{"rejected", "--requeue", f.deadLetter(t, "big", "eve", strings.Repeat("y", text), "words"), "--no-moderation"}
		}},
		{"rejected --requeue, environment", true, func(f *toolFixture) []string {
			return []string{"rejected", "--requeue", f.deadLetter(t, "big", "eve", strings.Repeat("y", text), "words"), "--no-moderation"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newToolFixture(t)
			ctx := context.Background()
			c := f.b.Client()
			f.seed(t, "src", "alice", strings.Repeat("x", text), time.Now())
			room, bus := f.b.Keys().Room("big"), f.b.Keys().BusOf("big")
			fillStream(t, f, room, filled)
			fillStream(t, f, bus, filled)
			busBefore := c.XLen(ctx, bus).Val()
			args := append(tc.args(f), f.args()...)
			if tc.env {
				for env, v := range deployment {
					t.Setenv(env, v)
				}
			} else {
				args = append(args, flags...)
			}
			var stdout, stderr bytes.Buffer
			if code := Run(ctx, args, &stdout, &stderr); code != 0 {
				t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
			}
			if got := c.XLen(ctx, room).Val(); got != filled+1 {
				t.Errorf("room has %d entries, want %d: trimmed to the default maxlen", got, filled+1)
			}
			if got := c.XLen(ctx, bus).Val(); got != busBefore+1 {
				t.Errorf("bus has %d entries, want %d: trimmed to the default maxlen", got, busBefore+1)
			}
			if got := c.PTTL(ctx, room).Val(); got != -1 {
				t.Errorf("room PTTL %v, want -1 (no TTL, as --room-ttl 0)", got)
			}
		})
	}
}

// TestToolLimitsRefuseNegative: negative limits, as flags or environment,
// are usage errors naming the flag, not "the default" or "forever".
func TestToolLimitsRefuseNegative(t *testing.T) {
	// Not parallel: one case sets a CHATSTREAM_* variable.
	f := newToolFixture(t)
	f.seed(t, "lobby", "alice", "hi", time.Now())
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"streams --room-maxlen", "", []string{"streams", "--room-maxlen", "-5"}, "--room-maxlen (CHATSTREAM_ROOM_MAXLEN) is -5"},
		{"streams --bus-maxlen", "", []string{"streams", "--bus-maxlen", "-1"}, "--bus-maxlen (CHATSTREAM_BUS_MAXLEN) is -1"},
		{"replay --room-ttl", "", []string{"replay", "--room", "lobby", "--into", "b", "--no-moderation", "--room-ttl", "-1h"}, "--room-ttl (CHATSTREAM_ROOM_TTL) is -1h0m0s"},
		{"rejected --max-text", "", []string{"rejected", "--max-text", "-1"}, "--max-text (CHATSTREAM_MAX_TEXT) is -1"},
		{"rejected --idempotency-window", "", []string{"rejected", "--idempotency-window", "-1s"}, "--idempotency-window (CHATSTREAM_IDEMPOTENCY_WINDOW) is -1s"},
		{"CHATSTREAM_ROOM_MAXLEN", "CHATSTREAM_ROOM_MAXLEN=-5", []string{"streams"}, "--room-maxlen (CHATSTREAM_ROOM_MAXLEN) is -5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			args := append(tc.args, f.args()...)
			if code := Run(context.Background(), args, &bytes.Buffer{}, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("%v: exit %d, stderr %q; want exit %d saying %q", args, code, stderr.String(), exitUsage, tc.want)
			}
		})
	}
	t.Run("0 shows the default", func(t *testing.T) {
		var stdout bytes.Buffer
		args := append([]string{"streams", "--room-maxlen", "0", "--bus-maxlen", "0"}, f.args()...)
		if code := Run(context.Background(), args, &stdout, &bytes.Buffer{}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if want := "room 10000, bus 10000"; !strings.Contains(stdout.String(), want) {
			t.Fatalf("streams with 0 limits:\n%s\nwant %q", stdout.String(), want)
		}
	})
}

// TestModerationFromEnvironment: CHATSTREAM_MODERATION set as on an
// instance, naming a file this machine does not have, does not stop the
// commands that only read, and an explicit --no-moderation overrides it;
// the file is needed only by a republish that uses it, and both flags on
// the command line are still refused.
func TestModerationFromEnvironment(t *testing.T) {
	// Not parallel: it sets CHATSTREAM_MODERATION.
	f := newToolFixture(t)
	f.seed(t, "lobby", "alice", "hi", time.Now())
	id := f.deadLetter(t, "lobby", "eve", "spam", "words")
	missing := filepath.Join(t.TempDir(), "instance-moderation.yaml")
	t.Setenv("CHATSTREAM_MODERATION", missing)
	exists := filepath.Join(t.TempDir(), "moderation.yaml")
	if err := os.WriteFile(exists, []byte("moderators: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
		says string
	}{
		{"replay reads", []string{"replay", "--room", "lobby"}, 0, ""},
		{"rejected lists", []string{"rejected"}, 0, ""},
		{"replay --into --no-moderation", []string{"replay", "--room", "lobby", "--into", "copy", "--speed", "max", "--no-moderation"}, 0, ""},
		{"rejected --requeue --no-moderation", []string{"rejected", "--requeue", id, "--no-moderation"}, 0, ""},
		{"replay --into uses the missing file", []string{"replay", "--room", "lobby", "--into", "copy"}, exitUsage, "--moderation (CHATSTREAM_MODERATION): stat " + missing},
		{"rejected --requeue uses the missing file", []string{"rejected", "--requeue", id}, exitUsage, "--moderation (CHATSTREAM_MODERATION): stat " + missing},
		{"both on the command line", []string{"replay", "--room", "lobby", "--into", "copy", "--moderation", exists, "--no-moderation"}, exitUsage, "not both"},
		{"requeue, both on the command line", []string{"rejected", "--requeue", id, "--moderation=" + exists, "--no-moderation"}, exitUsage, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			args := append(tc.args, f.args()...)
			if code := Run(context.Background(), args, &bytes.Buffer{}, &stderr); code != tc.want || !strings.Contains(stderr.String(), tc.says) {
				t.Fatalf("%v: exit %d, stderr %q; want exit %d saying %q", args, code, stderr.String(), tc.want, tc.says)
			}
		})
	}
}

// TestRequeueChecksPartitions: a requeue with another partition count than
// the instances' writes nothing (exit 3, naming --partitions): neither when
// the room's history exists under the instances' count, nor when the room
// has none and a running instance records its count. With the right count,
// a room without history is created, as an instance would. replay --into
// checks its target room the same way.
func TestRequeueChecksPartitions(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	ctx := context.Background()
	c := f.b.Client()
	f.seed(t, "lobby", "alice", "hi", time.Now())
	stored := f.deadLetter(t, "lobby", "eve", "spam", "words")
	fresh := f.deadLetter(t, "fresh", "eve", "first", "words")
	const wrong = 7
	wrongKeys := redisstore.Keys{Prefix: f.rs.Prefix, Partitions: wrong}
	if wrongKeys.Room("lobby") == f.b.Keys().Room("lobby") || wrongKeys.Room("fresh") == f.b.Keys().Room("fresh") {
		t.Fatal("pick another wrong partition count: the keys are the same")
	}
	requeue := func(id string, partitions int) (int, string) {
		args := []string{"rejected", "--requeue", id, "--no-moderation", "--redis", f.rs.URL, "--redis-prefix", f.rs.Prefix, "--partitions", strconv.Itoa(partitions)}
		var stderr bytes.Buffer
		return Run(ctx, args, &bytes.Buffer{}, &stderr), stderr.String()
	}
	noWrites := func(t *testing.T, room string) {
		t.Helper()
		for _, key := range []string{wrongKeys.Room(room), wrongKeys.BusOf(room)} {
			if n := c.Exists(ctx, key).Val(); n != 0 {
				t.Errorf("%s was written", key)
			}
		}
	}

	t.Run("history under the instances' count", func(t *testing.T) {
		code, stderr := requeue(stored, wrong)
		if code != exitNotFound || !strings.Contains(stderr, "--partitions 7") || !strings.Contains(stderr, f.b.Keys().Room("lobby")) {
			t.Fatalf("exit %d, stderr %q; want exit %d naming --partitions 7 and %s", code, stderr, exitNotFound, f.b.Keys().Room("lobby"))
		}
		noWrites(t, "lobby")
	})

	t.Run("replay --into", func(t *testing.T) {
		// A source room keyed alike under both counts, so replay finds it.
		src := ""
		for i := 0; src == ""; i++ {
			if name := "src" + strconv.Itoa(i); wrongKeys.Room(name) == f.b.Keys().Room(name) {
				src = name
			}
		}
		f.seed(t, src, "alice", "hi", time.Now())
		args := []string{"replay", "--room", src, "--into", "lobby", "--speed", "max", "--no-moderation",
			"--redis", f.rs.URL, "--redis-prefix", f.rs.Prefix, "--partitions", strconv.Itoa(wrong)}
		var stderr bytes.Buffer
		if code := Run(ctx, args, &bytes.Buffer{}, &stderr); code != exitNotFound || !strings.Contains(stderr.String(), "--partitions 7") {
			t.Fatalf("exit %d, stderr %q; want exit %d naming --partitions 7", code, stderr.String(), exitNotFound)
		}
		noWrites(t, "lobby")
	})

	t.Run("no history, a running instance's count", func(t *testing.T) {
		if err := f.b.RecordInstance(ctx, redisstore.InstanceInfo{ID: "gw-1", StartedAt: time.Now(), Positions: make([]string, 4)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Del(ctx, f.b.Keys().InstanceKey("gw-1")) })
		code, stderr := requeue(fresh, wrong)
		if code != exitNotFound || !strings.Contains(stderr, "gw-1 reads 4 partition buses") || !strings.Contains(stderr, "--partitions 7") {
			t.Fatalf("exit %d, stderr %q; want exit %d naming the instance and --partitions 7", code, stderr, exitNotFound)
		}
		noWrites(t, "fresh")
		if code, stderr := requeue(fresh, 4); code != 0 {
			t.Fatalf("with the instances' count: exit %d, stderr %q", code, stderr)
		}
		if got := roomMessages(t, f, "fresh"); len(got) != 1 || got[0].Text != "first" {
			t.Fatalf("fresh = %+v", got)
		}
	})
}
