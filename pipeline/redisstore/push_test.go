package redisstore

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
)

// TestAppendPushes: by default the append script pushes every message it
// stores, and only those, on its bus's shard channel; each push decodes
// (parsePush) to exactly the bus entry stored, and names the bus entry
// before it: across calls, when that entry was stored without pushes
// (before the backend's first call, or after its last one), and when the
// backend's last entry was deleted since, with nothing after it; it names
// none once the bus was lost. With PollBus nothing is pushed.
func TestAppendPushes(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	cfg := Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 1, PollBus: true, Logger: slog.New(slog.DiscardHandler)}
	quiet, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = quiet.Close() }()
	cfg.PollBus = false
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	bus := b.keys.Bus(0)
	ps := srv.Client().SSubscribe(ctx, b.keys.BusChannel(0, 0))
	defer func() { _ = ps.Close() }()
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil { // the confirmation
		t.Fatal(err)
	}

	msg := func(room, ref, text string) *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte(text))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, "alice")
		if ref != "" {
			m.Metadata.Set(pipeline.MetaRef, ref)
		}
		return m
	}
	appendOK := func(b *Backend, m *message.Message) pipeline.Appended {
		t.Helper()
		a, err := b.Append(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// receive receives the next push and decodes it.
	receive := func(what string) push {
		t.Helper()
		v, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		m, ok := v.(*redis.Message)
		if !ok {
			t.Fatalf("%s: got %T, want a message", what, v)
		}
		x, ok := parsePush(m.Payload)
		if !ok {
			t.Fatalf("%s does not decode: %q", what, m.Payload)
		}
		return x
	}
	unpushed := appendOK(quiet, msg("a", "", "not pushed"))
	// One batch of several rooms, with a duplicate send that stores
	// nothing: each stored message is pushed once, in order.
	sends := []*message.Message{
		msg("a", "r1", "one"), msg("b", "", strings.Repeat("long ", 100)),
		msg("a", "r1", "one again"), msg("c", "r2", ""),
	}
	done := make(chan pipeline.Appended, len(sends))
	for _, m := range sends {
		if err := b.AppendAsync(m, func(a pipeline.Appended, err error) {
			if err != nil {
				t.Error(err)
			}
			done <- a
		}); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []string
	for range sends {
		if a := <-done; !a.Duplicate {
			seqs = append(seqs, a.Seq)
		}
	}
	seqs = append(seqs, appendOK(b, msg("b", "", "next call")).Seq)
	if len(seqs) != 4 {
		t.Fatalf("%d messages stored, want 4", len(seqs))
	}

	prev := unpushed.Seq
	for i, seq := range seqs {
		x := receive(fmt.Sprintf("push %d", i))
		if x.prev != prev || x.id != seq {
			t.Fatalf("push %d: prev %s seq %s, want prev %s seq %s", i, x.prev, x.id, prev, seq)
		}
		stored, err := srv.Client().XRange(ctx, bus, seq, seq).Result()
		if err != nil || len(stored) != 1 {
			t.Fatalf("bus entry %s: %v %v", seq, stored, err)
		}
		// The push's message, decoded directly and through the entry's
		// field map, is the bus entry's.
		want := entryMessage(stored[0])
		for _, got := range []*message.Message{x.toMessage(), entryMessage(x.entry())} {
			if !sameMessage(got, want) {
				t.Fatalf("push %d decodes to %v %q %v, the bus entry to %v %q %v", i,
					got.UUID, got.Payload, got.Metadata, want.UUID, want.Payload, want.Metadata)
			}
		}
		prev = seq
	}
	// Nothing else was pushed.
	between := appendOK(quiet, msg("a", "", "not pushed either"))
	if v, err := ps.ReceiveTimeout(ctx, 200*time.Millisecond); err == nil {
		t.Fatalf("got %v, want no more pushes", v)
	}
	// The next push names the entry another writer stored after this
	// backend's last, and the one after it this backend's last.
	prev = between.Seq
	for i := range 2 {
		seq := appendOK(b, msg("c", "", "after another writer")).Seq
		if x := receive("push after another writer"); x.prev != prev || x.id != seq {
			t.Fatalf("push after another writer %d: prev %s seq %s, want prev %s seq %s", i, x.prev, x.id, prev, seq)
		}
		prev = seq
	}
	// The backend's last entry deleted, with nothing after it: the push
	// names it (a subscriber that handled it takes the push as next).
	if err := srv.Client().XDel(ctx, bus, prev).Err(); err != nil {
		t.Fatal(err)
	}
	seq := appendOK(b, msg("c", "", "after a deletion")).Seq
	if x := receive("push after a deletion"); x.prev != prev || x.id != seq {
		t.Fatalf("push after a deletion: prev %s seq %s, want prev %s seq %s", x.prev, x.id, prev, seq)
	}
	// A bus lost since: the push names no entry before it.
	if err := srv.Client().Del(ctx, bus).Err(); err != nil {
		t.Fatal(err)
	}
	seq = appendOK(b, msg("c", "", "after the loss")).Seq
	if x := receive("push after the loss"); x.prev != "0-0" || x.id != seq {
		t.Fatalf("push after the loss: prev %s seq %s, want prev 0-0 seq %s", x.prev, x.id, seq)
	}
}

// A push whose metadata is not chatstream's msgpack map decodes as its
// bus entry would: a message marked MetaUndecodable, with its seq.
func TestPushMessageUndecodable(t *testing.T) {
	x, ok := parsePush("1-1 2-0 3 4 abcnopehello")
	if !ok {
		t.Fatal("push does not parse")
	}
	if x.uuid != "abc" || x.metadata != "nope" || x.payload != "hello" {
		t.Fatalf("parsed %+v", x)
	}
	got := x.toMessage()
	if got.Metadata.Get(MetaUndecodable) == "" || got.Metadata.Get(pipeline.MetaSeq) != "2-0" {
		t.Fatalf("message %v %q %v, want undecodable with seq 2-0", got.UUID, got.Payload, got.Metadata)
	}
	if want := entryMessage(x.entry()); !sameMessage(got, want) {
		t.Fatalf("message %v, the entry's %v", got.Metadata, want.Metadata)
	}
}

// TestAppendAsksAfterHeard: once an instance's pushed subscription heard of
// an entry another instance stored after its own last one, its next append
// gives the script that entry as its last ID: the script asks for the bus's
// newest entry only after it (an empty reply), and the push names it.
func TestAppendAsksAfterHeard(t *testing.T) {
	srv := testredis.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 1, Logger: slog.New(slog.DiscardHandler)}
	backends := make([]*Backend, 2)
	for i := range backends {
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = b.Close() }()
		backends[i] = b
	}
	b, other := backends[0], backends[1]
	sub, err := b.Subscribe(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	store := func(b *Backend, text string) string {
		t.Helper()
		m := message.NewMessage(uuid.NewString(), []byte(text))
		m.Metadata.Set(pipeline.MetaRoom, "lobby")
		m.Metadata.Set(pipeline.MetaUser, "alice")
		a, err := b.Append(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return a.Seq
	}
	// handled waits until b's subscription handed out seq.
	handled := func(seq string) {
		t.Helper()
		for {
			select {
			case m, ok := <-sub:
				if !ok {
					t.Fatal("the subscription ended")
				}
				m.Ack()
				if m.Metadata.Get(pipeline.MetaSeq) == seq {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("the subscription did not hand out %s", seq)
			}
		}
	}
	handled(store(b, "mine"))
	theirs := store(other, "theirs")
	handled(theirs)

	lines := monitor(ctx, t, srv)
	deadline := time.After(10 * time.Second)
	// line returns the next command Redis ran, or "" after wait.
	line := func(wait time.Duration) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("MONITOR ended")
			}
			return l
		case <-time.After(wait):
			return ""
		case <-deadline:
			t.Fatal("MONITOR did not show the commands in time")
		}
		return ""
	}
	// Commands run after MONITOR answered may still come before it
	// watches: a marker command shows when it does.
	marker := srv.Prefix + ":monitor-ready"
	for ready := false; !ready; {
		if err := srv.Client().Exists(ctx, marker).Err(); err != nil {
			t.Fatal(err)
		}
		for l := line(100 * time.Millisecond); l != "" && !ready; l = line(100 * time.Millisecond) {
			ready = strings.Contains(l, marker)
		}
	}
	next := store(b, "next")
	handled(next)
	bus := strconv.Quote(b.keys.Bus(0))
	wantRead := `"XREVRANGE" ` + bus + ` "+" "(` + theirs + `" "COUNT"`
	wantPush := `"SPUBLISH" "` + b.keys.Bus(0) + b.channelSuffix + `" "` + theirs + " " + next + " "
	var read, pushed bool
	for !read || !pushed {
		l := line(time.Second)
		switch {
		case strings.Contains(l, `"XREVRANGE" `+bus):
			if !strings.Contains(l, wantRead) {
				t.Fatalf("the script ran %s, want %s", l, wantRead)
			}
			read = true
		case strings.Contains(l, `"SPUBLISH" `):
			if !strings.Contains(l, wantPush) {
				t.Fatalf("the script ran %s, want %s", l, wantPush)
			}
			pushed = true
		}
	}
}

// monitor runs MONITOR on its own connection to srv until ctx is done and
// returns the lines it reads: each command Redis runs, scripts' included.
func monitor(ctx context.Context, t *testing.T, srv *testredis.Server) <-chan string {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if opt.TLSConfig != nil {
		conn, err = tls.Dial(opt.Network, opt.Addr, opt.TLSConfig)
	} else {
		conn, err = net.Dial(opt.Network, opt.Addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	t.Cleanup(func() { stop(); _ = conn.Close() })
	rd := bufio.NewReader(conn)
	// command sends a command and checks that Redis answers +OK.
	command := func(args string) {
		t.Helper()
		if _, err := fmt.Fprintf(conn, "%s\r\n", args); err != nil {
			t.Fatal(err)
		}
		reply, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if reply != "+OK\r\n" {
			t.Fatalf("%s: Redis answered %q", strings.Fields(args)[0], reply)
		}
	}
	if opt.Password != "" {
		command("AUTH " + cmp.Or(opt.Username, "default") + " " + opt.Password)
	}
	command("MONITOR")
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(rd)
		// On a shared Redis other tests' commands pass by too, some of
		// them long (a line holds a whole command).
		sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

// A partition outside the backend's is refused, not followed.
func TestSubscribeRefusesUnknownPartition(t *testing.T) {
	srv := testredis.Start(t)
	b, err := New(Config{URL: srv.URL, Prefix: srv.Prefix, Partitions: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	for _, p := range []int{-1, 2, MaxPartitions} {
		if _, err := b.Subscribe(context.Background(), p, ""); err == nil {
			t.Errorf("partition %d of 2: subscribed, want an error", p)
		}
	}
}
