package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// TestClusterAppendRedirects: on a real Redis Cluster, an append whose
// reply is lost (the script ran, the connection closed before its reply)
// fails instead of being sent again by go-redis, so it is stored once and
// a retry with the same ref is deduplicated; and appends still follow ASK
// and MOVED redirects (the script did not run), while their slot moves to
// another primary. The subtests change the cluster, so they have it to
// themselves.
func TestClusterAppendRedirects(t *testing.T) {
	cl := testredis.StartCluster(t)
	var n atomic.Int64
	prefix := func() string { return fmt.Sprintf("%sa%d", cl.Prefix, n.Add(1)) }
	const partitions = 4

	t.Run("FollowsAskAndMoved", func(t *testing.T) {
		ctx := context.Background()
		b := newBackend(t, redisstore.Config{URL: cl.URL, Prefix: prefix(), Partitions: partitions})
		k := b.Keys()
		// The first append (which loads the client's slot map) makes
		// the keys the others use: a script call in a slot being
		// migrated runs where all its keys are (else TRYAGAIN).
		moving := roomOf(t, k, 1)
		mustAppend(t, b, send(moving, "", "before the migration"))
		slot := testredis.KeySlot(k.Room(moving))
		from := cl.PrimaryOf(k.Room(moving))
		var to *testredis.Node
		for _, p := range cl.Primaries() {
			if p != from {
				to = p
				break
			}
		}
		fromID, toID := nodeID(t, from), nodeID(t, to)
		setSlot := func(n *testredis.Node, args ...any) {
			t.Helper()
			if err := n.Client().Do(ctx, append([]any{"cluster", "setslot", slot}, args...)...).Err(); err != nil {
				t.Fatalf("CLUSTER SETSLOT %d %v on %s: %v", slot, args, n.Addr, err)
			}
		}
		setSlot(to, "importing", fromID)
		setSlot(from, "migrating", toID)
		keys, err := from.Client().ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil || len(keys) != 4 {
			t.Fatalf("keys in slot %d: got %v, %v; want the room's and the bus's 4", slot, keys, err)
		}
		migrate := []any{"migrate", "127.0.0.1", to.Port, "", 0, 5000, "keys"}
		for _, key := range keys {
			migrate = append(migrate, key)
		}
		if err := from.Client().Do(ctx, migrate...).Err(); err != nil {
			t.Fatalf("MIGRATE: %v", err)
		}
		before := redirects(t, from)
		// The keys have left the migrating node: it answers ASK.
		mustAppend(t, b, send(moving, "", "during the migration"))
		setSlot(to, "node", toID)
		setSlot(from, "node", toID)
		// The client's map still names the old node: it answers MOVED.
		mustAppend(t, b, send(moving, "", "after the migration"))
		after := redirects(t, from)
		if after["ASK"] <= before["ASK"] || after["MOVED"] <= before["MOVED"] {
			t.Fatalf("redirects by %s: got %v, had %v; want more ASK and MOVED", from.Addr, after, before)
		}
		if got, err := to.Client().XLen(ctx, k.Room(moving)).Result(); err != nil || got != 3 {
			t.Fatalf("room on the new primary: got %d entries, %v; want 3", got, err)
		}
		if got, err := to.Client().XLen(ctx, k.BusOf(moving)).Result(); err != nil || got != 3 {
			t.Fatalf("bus on the new primary: got %d entries, %v; want 3", got, err)
		}
	})

	t.Run("LostReplyIsNotRunAgain", func(t *testing.T) {
		ctx := context.Background()
		k := redisstore.Keys{Prefix: prefix(), Partitions: partitions}
		room := roomOf(t, k, 2)
		primary := cl.PrimaryOf(k.Room(room))
		proxy := startReplyDropper(t, primary.Addr)
		announce(t, cl, primary, testredis.KeySlot(k.Room(room)), proxy.port())
		b := newBackend(t, redisstore.Config{URL: cl.URL, Prefix: k.Prefix, Partitions: partitions})
		mustAppend(t, b, send(room, "", "warm-up: loads the script and the slot map"))
		direct := primary.Client()
		count := func(key string) int64 {
			t.Helper()
			n, err := direct.XLen(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		roomLen, busLen := count(k.Room(room)), count(k.BusOf(room))

		// No ref: nothing would deduplicate a second run of the script.
		proxy.dropReplyTo("no ref, sent once")
		got, err := b.Append(ctx, send(room, "", "no ref, sent once"))
		if proxy.drops.Load() != 1 {
			t.Fatalf("replies dropped: got %d, want 1 (the proxy did not see the append)", proxy.drops.Load())
		}
		if !errors.Is(err, pipeline.ErrUnavailable) {
			t.Errorf("append whose reply was lost: got %+v, %v; want ErrUnavailable", got, err)
		}
		if r, bus := count(k.Room(room)), count(k.BusOf(room)); r != roomLen+1 || bus != busLen+1 {
			t.Fatalf("after one send whose reply was lost: room %d → %d, bus %d → %d entries; want one more each", roomLen, r, busLen, bus)
		}

		// With a ref the sender's retry gets the message stored by the
		// append whose reply was lost.
		proxy.dropReplyTo("with a ref")
		if got, err := b.Append(ctx, send(room, "ref-1", "with a ref")); !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("append whose reply was lost: got %+v, %v; want ErrUnavailable", got, err)
		}
		again := mustAppend(t, b, send(room, "ref-1", "with a ref"))
		if !again.Duplicate {
			t.Fatalf("retry with the same ref: got %+v, want the message stored before", again)
		}
		if r, bus := count(k.Room(room)), count(k.BusOf(room)); r != roomLen+2 || bus != busLen+2 {
			t.Fatalf("after two sends: room %d → %d, bus %d → %d entries; want two more each", roomLen, r, busLen, bus)
		}
	})
}

// roomOf returns a room of partition p.
func roomOf(t *testing.T, k redisstore.Keys, p int) string {
	t.Helper()
	for i := range 10_000 {
		if room := fmt.Sprintf("room%d", i); pipeline.PartitionOf(room, k.Partitions) == p {
			return room
		}
	}
	t.Fatalf("no room of partition %d", p)
	return ""
}

// nodeID returns the cluster ID of n (CLUSTER MYID).
func nodeID(t *testing.T, n *testredis.Node) string {
	t.Helper()
	id, err := n.Client().Do(context.Background(), "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// redirects returns the ASK and MOVED replies n has sent (INFO errorstats).
func redirects(t *testing.T, n *testredis.Node) map[string]int {
	t.Helper()
	info, err := n.Client().Info(context.Background(), "errorstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		// errorstat_MOVED:count=3
		name, count, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "errorstat_")), ":count=")
		if ok {
			out[name], _ = strconv.Atoi(count)
		}
	}
	return out
}

// announce makes primary announce port instead of its own, and waits until
// every node maps slot to it, so that cluster clients reach primary on port.
func announce(t *testing.T, cl *testredis.Cluster, primary *testredis.Node, slot, port int) {
	t.Helper()
	ctx := context.Background()
	if err := primary.Client().ConfigSet(ctx, "cluster-announce-port", strconv.Itoa(port)).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range cl.Nodes {
		c := n.Client()
		for {
			got, err := slotPort(ctx, c, slot)
			if err == nil && got == port {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s maps slot %d to port %d (%v), want %d", n.Addr, slot, got, err, port)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// slotPort returns the port of the primary that c's node maps slot to.
func slotPort(ctx context.Context, c *redis.Client, slot int) (int, error) {
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		if s.Start <= slot && slot <= s.End && len(s.Nodes) > 0 {
			_, port, err := net.SplitHostPort(s.Nodes[0].Addr)
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(port)
		}
	}
	return 0, fmt.Errorf("slot %d is not served", slot)
}

// replyDropper is a TCP proxy in front of one Redis node. Once told a
// marker (dropReplyTo), it closes the first connection that sends the
// marker when the node answers, instead of forwarding the answer: the
// command ran and its reply is lost.
type replyDropper struct {
	ln     net.Listener
	target string
	// marker is the text to look for; nil when disarmed.
	marker atomic.Pointer[[]byte]
	// drops counts the replies dropped.
	drops atomic.Int64

	wg sync.WaitGroup
	// mu guards conns and closed.
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

// startReplyDropper listens on a free loopback port and forwards to
// target until t ends.
func startReplyDropper(t *testing.T, target string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *replyDropper) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// dropReplyTo arms the proxy: the next connection that sends marker loses
// the node's answer.
func (p *replyDropper) dropReplyTo(marker string) {
	b := []byte(marker)
	p.marker.Store(&b)
}

// track registers c to be closed by close; false when the proxy is closed.
func (p *replyDropper) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *replyDropper) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close() // ends accept
	for _, c := range p.conns {
		_ = c.Close() // ends its forwarding goroutines
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// accept forwards each connection until the listener closes.
func (p *replyDropper) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close() // the node is down: so is its proxy
			continue
		}
		if !p.track(client) || !p.track(server) {
			_ = client.Close() // closing
			_ = server.Close() // closing
			return
		}
		var drop atomic.Bool
		p.wg.Go(func() { p.forward(server, client, &drop, true) })
		p.wg.Go(func() { p.forward(client, server, &drop, false) })
	}
}

// forward copies from src to dst until either closes. Requests (src is the
// client) that carry the armed marker set drop before they are forwarded;
// the first answer (src is the node) read while drop is set closes both
// connections instead of being forwarded.
func (p *replyDropper) forward(dst, src net.Conn, drop *atomic.Bool, request bool) {
	defer func() {
		_ = dst.Close() // one direction ended: end the other
		_ = src.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if request {
				if m := p.marker.Load(); m != nil && bytes.Contains(buf[:n], *m) && p.marker.CompareAndSwap(m, nil) {
					drop.Store(true)
				}
			} else if drop.Load() {
				p.drops.Add(1)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
