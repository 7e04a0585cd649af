package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/version"
	"github.com/chatstream/chatstream/ws"
)

// wait bounds every expected event.
const wait = 10 * time.Second

// instance is one running chatstream server and its Redis backend.
type instance struct {
	*testserver.Instance
	backend *redisstore.Backend
}

// startInstance runs a server on a free loopback port backed by the Redis
// at url with prefix, until t ends.
func startInstance(t *testing.T, url, prefix string, roomMaxLen int64) *instance {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisstore.New(redisstore.Config{URL: url, Prefix: prefix, RoomMaxLen: roomMaxLen, Partitions: 4, Logger: log, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in := testserver.Start(t, server.Config{
		Backend: backend.Redis(b, log), Logger: log,
		WS:            ws.Config{FrameRate: 1e6, FrameBurst: 1e6, SendQueue: 4096},
		ReportEvery:   100 * time.Millisecond,
		PresenceEvery: 100 * time.Millisecond,
	})
	return &instance{Instance: in, backend: b}
}

func dial(t *testing.T, in *instance, user string) *wstest.Client {
	t.Helper()
	c, err := wstest.Dial(in.URL(), user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func joinRoom(t *testing.T, c *wstest.Client, frame map[string]any) wstest.Frame {
	t.Helper()
	if err := c.Send(frame); err != nil {
		t.Fatal(err)
	}
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" || f.Type == "error" }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type == "error" {
		t.Fatalf("join: %s", f.Raw)
	}
	return f
}

// messages returns the next n message frames of c.
func messages(t *testing.T, c *wstest.Client, n int) []wstest.Frame {
	t.Helper()
	var out []wstest.Frame
	for len(out) < n {
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" }, wait)
		if err != nil {
			t.Fatalf("got %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, f)
	}
	return out
}

// sendAcked sends text and returns its ack.
func sendAcked(t *testing.T, c *wstest.Client, room, text string) wstest.Frame {
	t.Helper()
	if err := c.Say(room, text, text); err != nil {
		t.Fatal(err)
	}
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == text && (f.Type == "ack" || f.Type == "error") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != "ack" {
		t.Fatalf("send %s: %s", text, f.Raw)
	}
	return f
}

// TestThreeInstancesDeliverInOrder: three instances share one Redis; clients
// spread over them all receive 3×100 messages in one order, none lost or
// doubled, each sender's messages in its sending order.
func TestThreeInstancesDeliverInOrder(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	ins := []*instance{
		startInstance(t, rs.URL, rs.Prefix, 10_000),
		startInstance(t, rs.URL, rs.Prefix, 10_000),
		startInstance(t, rs.URL, rs.Prefix, 10_000),
	}
	var clients []*wstest.Client
	for i, in := range ins {
		for j := range 2 {
			c := dial(t, in, fmt.Sprintf("u%d%d", i, j))
			joinRoom(t, c, map[string]any{"type": "join", "room": "lobby", "history": 0})
			clients = append(clients, c)
		}
	}
	const n = 100
	var wg sync.WaitGroup
	for i := range ins {
		sender := clients[2*i]
		wg.Go(func() {
			for k := range n {
				if err := sender.Say("lobby", fmt.Sprintf("s%d-%03d", i, k), fmt.Sprintf("s%d-%03d", i, k)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var reference []string
	for ci, c := range clients {
		got := messages(t, c, 3*n)
		var seqs []string
		next := map[string]int{}
		seen := map[string]bool{}
		for _, m := range got {
			if seen[m.Seq] {
				t.Fatalf("client %d got seq %s twice", ci, m.Seq)
			}
			seen[m.Seq] = true
			seqs = append(seqs, m.Seq+"="+m.Text)
			sender := m.Text[:2]
			if want := fmt.Sprintf("%s-%03d", sender, next[sender]); m.Text != want {
				t.Fatalf("client %d: got %s, want %s (sender order)", ci, m.Text, want)
			}
			next[sender]++
		}
		if reference == nil {
			reference = seqs
		} else if strings.Join(seqs, ",") != strings.Join(reference, ",") {
			t.Fatalf("client %d saw a different order", ci)
		}
		select {
		case f := <-c.Frames():
			if f.Type == "message" {
				t.Fatalf("client %d got an extra message %s", ci, f.Raw)
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The room stream holds the same 300 messages in the same order.
	entries, err := rs.Client().XRange(context.Background(), ins[0].backend.Keys().Room("lobby"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3*n {
		t.Fatalf("room stream has %d entries, want %d", len(entries), 3*n)
	}
	for i, e := range entries {
		if !strings.HasPrefix(reference[i], e.ID+"=") {
			t.Fatalf("stream entry %d is %s, delivered %s", i, e.ID, reference[i])
		}
	}
}

// TestHistoryAndResumeAcrossInstances: history on join and resume after a
// disconnect work whichever instance the client reaches.
func TestHistoryAndResumeAcrossInstances(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	a := startInstance(t, rs.URL, rs.Prefix, 10_000)
	b := startInstance(t, rs.URL, rs.Prefix, 10_000)
	alice := dial(t, a, "alice")
	joinRoom(t, alice, map[string]any{"type": "join", "room": "lobby", "history": 0})
	for i := range 10 {
		sendAcked(t, alice, "lobby", fmt.Sprintf("m%d", i))
	}
	bob := dial(t, b, "bob")
	f := joinRoom(t, bob, map[string]any{"type": "join", "room": "lobby", "history": 5})
	var got []string
	for _, m := range f.History {
		got = append(got, m.Text)
	}
	if strings.Join(got, ",") != "m5,m6,m7,m8,m9" {
		t.Fatalf("history on b = %v", got)
	}
	last := f.History[4].Seq
	bob.Close()
	for i := 10; i < 15; i++ {
		sendAcked(t, alice, "lobby", fmt.Sprintf("m%d", i))
	}
	// Bob comes back on the other instance.
	bob2 := dial(t, a, "bob")
	f = joinRoom(t, bob2, map[string]any{"type": "join", "room": "lobby", "since": last})
	got = got[:0]
	for _, m := range f.History {
		got = append(got, m.Text)
	}
	if strings.Join(got, ",") != "m10,m11,m12,m13,m14" || f.Truncated {
		t.Fatalf("resume = %v (truncated %v)", got, f.Truncated)
	}
	sendAcked(t, alice, "lobby", "live")
	if m := messages(t, bob2, 1); m[0].Text != "live" {
		t.Fatalf("after resume got %q, want live", m[0].Text)
	}
}

// TestTrimmedSince: resuming from before the oldest kept entry returns what
// exists and says truncated.
func TestTrimmedSince(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	in := startInstance(t, rs.URL, rs.Prefix, 10)
	alice := dial(t, in, "alice")
	joinRoom(t, alice, map[string]any{"type": "join", "room": "lobby", "history": 0})
	first := sendAcked(t, alice, "lobby", "first")
	for i := range 250 {
		if err := alice.Say("lobby", fmt.Sprintf("m%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	sendAcked(t, alice, "lobby", "last")
	bob := dial(t, in, "bob")
	f := joinRoom(t, bob, map[string]any{"type": "join", "room": "lobby", "since": first.Seq})
	if !f.Truncated || len(f.History) == 0 || len(f.History) > 200 || f.History[len(f.History)-1].Text != "last" {
		t.Fatalf("truncated = %v with %d messages", f.Truncated, len(f.History))
	}
}

// TestUndecodableEntrySkipped: a bus entry that is not a chat message is
// logged, counted and skipped; delivery goes on.
func TestUndecodableEntrySkipped(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	in := startInstance(t, rs.URL, rs.Prefix, 10_000)
	alice := dial(t, in, "alice")
	joinRoom(t, alice, map[string]any{"type": "join", "room": "lobby", "history": 0})
	bus := in.backend.Keys().BusOf("lobby")
	rc := rs.Client()
	ctx := context.Background()
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: bus, Values: []any{"garbage", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: bus, Values: []any{"_watermill_message_uuid", "x", "payload", "hi", "metadata", "\xc1not msgpack"}}).Err(); err != nil {
		t.Fatal(err)
	}
	sendAcked(t, alice, "lobby", "after garbage")
	if m := messages(t, alice, 1); m[0].Text != "after garbage" {
		t.Fatalf("got %q", m[0].Text)
	}
	if got := in.Pipeline().Stats().Undecodable; got != 2 {
		t.Fatalf("undecodable = %d, want 2", got)
	}
}

// TestRedisOutage: Redis stops during traffic and comes back (with AOF).
// Sends during the outage get unavailable and /readyz fails; the instances
// recover by themselves; every acked message is in the room stream.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t, testredis.Options{AOF: true})
	if !rs.Private() {
		t.Skip("needs a private redis-server to stop and restart")
	}
	a := startInstance(t, rs.URL, rs.Prefix, 10_000)
	b := startInstance(t, rs.URL, rs.Prefix, 10_000)
	sender := dial(t, a, "alice")
	joinRoom(t, sender, map[string]any{"type": "join", "room": "lobby", "history": 0})
	watcher := dial(t, b, "bob")
	joinRoom(t, watcher, map[string]any{"type": "join", "room": "lobby", "history": 0})

	var acked []string
	unavailable := 0
	send := func(text string) {
		if err := sender.Say("lobby", text, text); err != nil {
			t.Fatal(err)
		}
		f, err := sender.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == text && (f.Type == "ack" || f.Type == "error") }, wait)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.Type == "ack":
			acked = append(acked, f.Seq)
		case f.Code == pipeline.CodeUnavailable:
			unavailable++
		default:
			t.Fatalf("send %s: %s", text, f.Raw)
		}
	}
	for i := range 20 {
		send(fmt.Sprintf("before-%d", i))
	}
	rs.Stop()
	for i := range 5 {
		send(fmt.Sprintf("during-%d", i))
	}
	if unavailable == 0 {
		t.Fatal("no send got unavailable while Redis was down")
	}
	if code := status(t, a.URL()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz during outage = %d, want 503", code)
	}
	rs.Restart()
	deadline := time.Now().Add(wait)
	for status(t, a.URL()+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("readyz did not recover")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := len(acked)
	for i := range 20 {
		send(fmt.Sprintf("after-%d", i))
	}
	if len(acked)-before != 20 {
		t.Fatalf("after recovery %d of 20 sends were acked", len(acked)-before)
	}
	// The other instance delivers again without a restart.
	deadline = time.Now().Add(wait)
	for {
		f, err := watcher.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "message" }, time.Until(deadline))
		if err != nil {
			t.Fatalf("watcher did not receive the messages sent after recovery: %v", err)
		}
		if f.Text == "after-19" {
			break
		}
	}
	entries, err := rs.Client().XRange(context.Background(), a.backend.Keys().Room("lobby"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, e := range entries {
		stored[e.ID] = true
	}
	for _, seq := range acked {
		if !stored[seq] {
			t.Fatalf("acked message %s is not in the room stream", seq)
		}
	}
	t.Logf("%d acked, %d unavailable during the outage", len(acked), unavailable)
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestInstanceRecords: each instance records how far it has read every
// partition bus, under a key with a TTL.
func TestInstanceRecords(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	in := startInstance(t, rs.URL, rs.Prefix, 10_000)
	c := dial(t, in, "alice")
	joinRoom(t, c, map[string]any{"type": "join", "room": "lobby", "history": 0})
	ack := sendAcked(t, c, "lobby", "hello")
	messages(t, c, 1)
	part := pipeline.PartitionOf("lobby", in.backend.Partitions())
	deadline := time.Now().Add(wait)
	for {
		infos, err := in.backend.Instances(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 1 && infos[0].ID == in.InstanceID() && infos[0].Positions[part] == ack.Seq && infos[0].Version == version.Read().Short() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances = %+v, want %s at %s on partition %d", infos, in.InstanceID(), ack.Seq, part)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ttl, err := rs.Client().TTL(context.Background(), in.backend.Keys().InstanceKey(in.InstanceID())).Result()
	if err != nil || ttl <= 0 || ttl > redisstore.InstanceTTL {
		t.Fatalf("instance key TTL = %v, %v", ttl, err)
	}
}

// TestPresenceAcrossInstances: members on two instances see each other in
// presence, and a leave on one instance reaches the other.
func TestPresenceAcrossInstances(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	a := startInstance(t, rs.URL, rs.Prefix, 10_000)
	b := startInstance(t, rs.URL, rs.Prefix, 10_000)
	alice := dial(t, a, "alice")
	joinRoom(t, alice, map[string]any{"type": "join", "room": "lobby", "history": 0})
	snap, err := alice.Await("presence", wait)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(snap.Users) != "[alice]" || snap.Count != 1 {
		t.Fatalf("alice's snapshot = %s", snap.Raw)
	}
	bob := dial(t, b, "bob")
	joinRoom(t, bob, map[string]any{"type": "join", "room": "lobby", "history": 0})
	// Alice learns that bob joined (on the other instance).
	f, err := alice.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "presence" && slices.Contains(f.Joined, "bob") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Count != 2 {
		t.Fatalf("count after bob joined = %d, want 2", f.Count)
	}
	// Bob's view converges to both users.
	if _, err := bob.AwaitFunc(func(f wstest.Frame) bool {
		return f.Type == "presence" && (slices.Contains(f.Users, "alice") || slices.Contains(f.Joined, "alice"))
	}, wait); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	f, err = alice.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "presence" && slices.Contains(f.Left, "bob") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Count != 1 {
		t.Fatalf("count after bob left = %d, want 1", f.Count)
	}
}
