package testredis

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Timings of a test cluster.
const (
	// ClusterNodeTimeout is the cluster-node-timeout of a test cluster: a
	// primary unreachable for longer is failed over to its replica, which
	// takes about twice this in all.
	ClusterNodeTimeout = 1500 * time.Millisecond
	// clusterWait bounds the creation of a cluster and a failover.
	clusterWait = 30 * time.Second
)

// Node is one redis-server process of a test cluster or replicated pair.
type Node struct {
	// Addr is host:port.
	Addr string
	// Port is the client port.
	Port int

	t    testing.TB
	dir  string
	bin  string
	args []string

	// mu guards cmd.
	mu  sync.Mutex
	cmd *exec.Cmd
}

// Client returns a client of this node alone, closed in t.Cleanup.
func (n *Node) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.Addr})
	n.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill ends the node with SIGKILL: it saves nothing and answers nothing.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // an already finished process is fine
	_ = cmd.Wait()         // its exit status is SIGKILL's
}

// Pause stops the node's process with SIGSTOP: it keeps its connections
// but answers nothing until Resume.
func (n *Node) Pause() { n.signal(syscall.SIGSTOP) }

// Resume continues a paused node (SIGCONT).
func (n *Node) Resume() { n.signal(syscall.SIGCONT) }

func (n *Node) signal(sig os.Signal) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		n.t.Fatal("testredis: the node is not running")
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("testredis: signal %v: %v", sig, err)
	}
}

// stop ends the node cleanly (SIGINT), or with SIGKILL after 5 s.
func (n *Node) stop() {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused node must run to exit
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a stopped node is not interesting
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// log returns the node's log file.
func (n *Node) log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "redis.log")) // a missing log is reported as empty
	return string(b)
}

// startNode starts a redis-server with args added to the common ones, and
// waits until it answers PING.
func startNode(t testing.TB, bin string, args ...string) *Node {
	t.Helper()
	n := &Node{t: t, dir: t.TempDir(), Port: freePort(t), bin: bin}
	n.Addr = fmt.Sprintf("127.0.0.1:%d", n.Port)
	n.args = append([]string{
		"--port", strconv.Itoa(n.Port), "--bind", "127.0.0.1", "--dir", n.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", filepath.Join(n.dir, "redis.log"),
	}, args...)
	n.run()
	t.Cleanup(n.stop)
	return n
}

// Restart starts a killed node again with its directory (a cluster node
// keeps its nodes.conf, so a failed-over primary rejoins as a replica).
func (n *Node) Restart() {
	n.t.Helper()
	n.mu.Lock()
	running := n.cmd != nil
	n.mu.Unlock()
	if running {
		n.t.Fatal("testredis: restart of a running node")
	}
	n.run()
}

// run starts the process and waits until it answers PING.
func (n *Node) run() {
	n.t.Helper()
	cmd := exec.Command(n.bin, n.args...)
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start redis-server: %v", err)
	}
	n.mu.Lock()
	n.cmd = cmd
	n.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: n.Addr})
	defer c.Close()
	err := poll(10*time.Second, func(ctx context.Context) error { return c.Ping(ctx).Err() })
	if err != nil {
		n.t.Fatalf("redis-server %s did not answer: %v\n%s", n.Addr, err, n.log())
	}
}

// poll runs fn until it returns nil, at most for d.
func poll(d time.Duration, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := fn(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookBins returns the paths of the named programs, or skips t (fails it
// under CI) when one is missing.
func lookBins(t testing.TB, names ...string) []string {
	t.Helper()
	var out []string
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; CI must provide it (packages redis-server and redis-tools)", name)
			}
			t.Skipf("%s not found", name)
		}
		out = append(out, p)
	}
	return out
}

// Cluster is a Redis Cluster of three primaries with one replica each, on
// loopback, for one test.
type Cluster struct {
	// URL is the comma separated host:port list of every node, the
	// cluster form of chatstream's --redis.
	URL string
	// Prefix is a key prefix unique to the test.
	Prefix string
	// Nodes are the six nodes, the first three created as primaries.
	Nodes []*Node

	t testing.TB
}

// StartCluster starts six redis-server processes in cluster mode
// (cluster-node-timeout ClusterNodeTimeout, nothing persisted), makes them
// a cluster of three primaries with a replica each (redis-cli --cluster
// create), and waits until every node reports cluster_state:ok and every
// replica is in sync. They are stopped in t.Cleanup. Without redis-server
// or redis-cli the test is skipped, or failed when CI is set.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bins := lookBins(t, "redis-server", "redis-cli")
	c := &Cluster{t: t, Prefix: "t" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")}
	addrs := make([]string, 6)
	for i := range addrs {
		n := startNode(t, bins[0],
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(freePort(t)),
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout.Milliseconds())),
		)
		c.Nodes = append(c.Nodes, n)
		addrs[i] = n.Addr
	}
	c.URL = strings.Join(addrs, ",")
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	out, err := exec.Command(bins[1], args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// Client returns a cluster client of every node, closed in t.Cleanup.
func (c *Cluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(c.URL, ",")})
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// ClusterNode is one node as CLUSTER NODES lists it.
type ClusterNode struct {
	// ID is the node's cluster ID.
	ID string
	// Addr is host:port.
	Addr string
	// Primary is set for a primary (CLUSTER NODES flag master).
	Primary bool
	// Failed is set for a node the cluster marked fail or fail?.
	Failed bool
	// PrimaryID is a replica's primary.
	PrimaryID string
	// Slots are the slot ranges a primary serves, as "from-to" or "n".
	Slots []string
}

// Topology returns the cluster as the first running node sees it.
func (c *Cluster) Topology() ([]ClusterNode, error) {
	var lastErr error
	for _, n := range c.running() {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := cl.ClusterNodes(ctx).Result()
		cancel()
		_ = cl.Close() // a one-off client
		if err != nil {
			lastErr = err
			continue
		}
		return parseClusterNodes(s), nil
	}
	return nil, fmt.Errorf("testredis: no node answers CLUSTER NODES: %w", lastErr)
}

func parseClusterNodes(s string) []ClusterNode {
	var out []ClusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := ClusterNode{
			ID: f[0], Addr: addr, Primary: slices.Contains(flags, "master"),
			Failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
		}
		if f[3] != "-" {
			n.PrimaryID = f[3]
		}
		if len(f) > 8 {
			n.Slots = f[8:]
		}
		out = append(out, n)
	}
	return out
}

// running returns the nodes not killed.
func (c *Cluster) running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		n.mu.Lock()
		if n.cmd != nil {
			out = append(out, n)
		}
		n.mu.Unlock()
	}
	return out
}

// node returns the node listening on addr.
func (c *Cluster) node(addr string) *Node {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Primaries returns the running primaries that serve slots.
func (c *Cluster) Primaries() []*Node {
	c.t.Helper()
	top, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*Node
	for _, cn := range top {
		if cn.Primary && !cn.Failed && len(cn.Slots) > 0 {
			if n := c.node(cn.Addr); n != nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// PrimaryOf returns the running primary that serves key's slot.
func (c *Cluster) PrimaryOf(key string) *Node {
	c.t.Helper()
	slot := KeySlot(key)
	top, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, cn := range top {
		if cn.Primary && !cn.Failed && servesSlot(cn.Slots, slot) {
			if n := c.node(cn.Addr); n != nil {
				return n
			}
		}
	}
	c.t.Fatalf("testredis: no primary serves slot %d of %q", slot, key)
	return nil
}

// KeySlot returns the cluster slot of key (CRC16 of its hash tag, mod 16384),
// as CLUSTER KEYSLOT does.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16([]byte(key)) % 16384)
}

// crc16 is CRC-16/XMODEM, Redis Cluster's key hash.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func servesSlot(ranges []string, slot int) bool {
	for _, r := range ranges {
		if strings.HasPrefix(r, "[") {
			continue // a slot being migrated
		}
		from, to, ok := strings.Cut(r, "-")
		if !ok {
			to = from
		}
		a, err1 := strconv.Atoi(from)
		b, err2 := strconv.Atoi(to)
		if err1 == nil && err2 == nil && a <= slot && slot <= b {
			return true
		}
	}
	return false
}

// ReplicaOf returns the running replica of primary.
func (c *Cluster) ReplicaOf(primary *Node) *Node {
	c.t.Helper()
	top, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	var id string
	for _, cn := range top {
		if cn.Addr == primary.Addr {
			id = cn.ID
		}
	}
	for _, cn := range top {
		if id != "" && cn.PrimaryID == id && !cn.Failed {
			if n := c.node(cn.Addr); n != nil {
				return n
			}
		}
	}
	c.t.Fatalf("testredis: %s has no replica", primary.Addr)
	return nil
}

// KillPrimaryOf SIGKILLs the primary serving key's slot and returns it
// and its replica, which the cluster will promote (see WaitPromoted).
func (c *Cluster) KillPrimaryOf(key string) (killed, replica *Node) {
	c.t.Helper()
	killed = c.PrimaryOf(key)
	replica = c.ReplicaOf(killed)
	killed.Kill()
	return killed, replica
}

// WaitPromoted waits until replica is a primary serving slots and every
// running node reports cluster_state:ok.
func (c *Cluster) WaitPromoted(replica *Node) {
	c.t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer cl.Close()
	err := poll(clusterWait, func(ctx context.Context) error {
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s is not promoted yet", replica.Addr)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("testredis: failover: %v", err)
	}
	c.WaitHealthy()
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// sees every other running node, and every running replica's link to its
// primary is up.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	nodes := c.running()
	err := poll(clusterWait, func(ctx context.Context) error {
		for _, n := range nodes {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr})
			info, err := cl.ClusterInfo(ctx).Result()
			var repl, nodesList string
			if err == nil {
				repl, err = cl.Info(ctx, "replication").Result()
			}
			if err == nil {
				nodesList, err = cl.ClusterNodes(ctx).Result()
			}
			_ = cl.Close() // a one-off client
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster state is not ok", n.Addr)
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("%s: replica not in sync", n.Addr)
			}
			known := 0
			for _, cn := range parseClusterNodes(nodesList) {
				if !cn.Failed && c.node(cn.Addr) != nil && slices.Contains(nodes, c.node(cn.Addr)) {
					known++
				}
			}
			if known < len(nodes) {
				return fmt.Errorf("%s sees %d of %d running nodes", n.Addr, known, len(nodes))
			}
		}
		return nil
	})
	if err != nil {
		var logs bytes.Buffer
		for _, n := range nodes {
			fmt.Fprintf(&logs, "== %s\n%s\n", n.Addr, tail(n.log(), 2000))
		}
		c.t.Fatalf("testredis: cluster not healthy: %v\n%s", err, logs.String())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Replicated is a primary and one replica (replicaof), not a cluster.
type Replicated struct {
	// URL is the primary's redis:// URL.
	URL string
	// Prefix is a key prefix unique to the test.
	Prefix string
	// Primary and Replica are the two nodes.
	Primary, Replica *Node
}

// StartReplicated starts a primary and a replica of it and waits until the
// replica is in sync; both stop in t.Cleanup. Skipped (failed under CI)
// without redis-server.
func StartReplicated(t testing.TB) *Replicated {
	t.Helper()
	bin := lookBins(t, "redis-server")[0]
	p := startNode(t, bin)
	r := startNode(t, bin, "--replicaof", "127.0.0.1", strconv.Itoa(p.Port))
	cl := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer cl.Close()
	err := poll(clusterWait, func(ctx context.Context) error {
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s not in sync", r.Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testredis: %v\n%s", err, r.log())
	}
	return &Replicated{
		URL: fmt.Sprintf("redis://%s/0", p.Addr), Primary: p, Replica: r,
		Prefix: "t" + strings.ReplaceAll(uuid.NewString()[:13], "-", ""),
	}
}

// SentinelMaster is the master name the sentinels of StartSentinels
// monitor.
const SentinelMaster = "chat"

// StartSentinels starts n Redis Sentinels (redis-server --sentinel)
// monitoring rs's primary under SentinelMaster with a quorum of n/2+1,
// down-after-milliseconds 1000, and returns their comma separated
// addresses. They stop in t.Cleanup.
func StartSentinels(t testing.TB, rs *Replicated, n int) string {
	t.Helper()
	bin := lookBins(t, "redis-server")[0]
	var addrs []string
	for range n {
		s := &Node{t: t, dir: t.TempDir(), Port: freePort(t), bin: bin}
		s.Addr = fmt.Sprintf("127.0.0.1:%d", s.Port)
		conf := filepath.Join(s.dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %[4]s 127.0.0.1 %[5]d %[6]d\n"+
			"sentinel down-after-milliseconds %[4]s 1000\nsentinel failover-timeout %[4]s 5000\n",
			s.Port, s.dir, filepath.Join(s.dir, "redis.log"), SentinelMaster, rs.Primary.Port, n/2+1)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		s.args = []string{conf, "--sentinel"}
		s.run()
		t.Cleanup(s.stop)
		addrs = append(addrs, s.Addr)
	}
	return strings.Join(addrs, ",")
}

// WaitSentinelPrimary waits until the first sentinel of addrs names want
// as the primary of SentinelMaster.
func WaitSentinelPrimary(t testing.TB, addrs string, want *Node) {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: strings.Split(addrs, ",")[0]})
	defer sc.Close()
	err := poll(clusterWait, func(ctx context.Context) error {
		got, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0]+":"+got[1] != want.Addr {
			return fmt.Errorf("sentinels name %v, want %s", got, want.Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testredis: sentinel failover: %v", err)
	}
}

// MigrationTimes are when the phases of a MigrateSlot began.
type MigrationTimes struct {
	// Start: the new owner imports the slot and the old one migrates it.
	Start time.Time
	// Keys: MIGRATE moves the slot's keys.
	Keys time.Time
	// NewOwner: the new owner has taken the slot; the old one still
	// migrates it (it answers ASK for the keys it no longer has).
	NewOwner time.Time
	// Done: every primary has been told the new owner.
	Done time.Time
}

// MigrateSlot moves slot, with its keys, from the primary serving it to
// the primary to, as redis-cli --cluster reshard does: to imports and the
// owner migrates it, MIGRATE moves its keys, then every primary is told
// that to owns it, the new owner first. It holds the slot for hold in the
// importing/migrating state before the keys move, and again after the new
// owner has taken it and before the old one is told, so that clients meet
// both states. It returns once every running node says to owns the slot.
// Clients of the slot get ASK or TRYAGAIN replies meanwhile, and the old
// owner's shard channel subscribers of the slot are unsubscribed at the
// end.
func (c *Cluster) MigrateSlot(slot int, to *Node, hold time.Duration) MigrationTimes {
	c.t.Helper()
	top, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	var from *Node
	var fromID, toID string
	for _, cn := range top {
		if cn.Primary && !cn.Failed && servesSlot(cn.Slots, slot) {
			from, fromID = c.node(cn.Addr), cn.ID
		}
		if cn.Addr == to.Addr {
			toID = cn.ID
		}
	}
	if from == nil || toID == "" || from == to {
		owner := "none"
		if from != nil {
			owner = from.Addr
		}
		c.t.Fatalf("testredis: cannot migrate slot %d to %s (served by %s)", slot, to.Addr, owner)
	}
	host, _, _ := strings.Cut(to.Addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	src, dst := redis.NewClient(&redis.Options{Addr: from.Addr}), redis.NewClient(&redis.Options{Addr: to.Addr})
	defer src.Close()
	defer dst.Close()
	must := func(what string, err error) {
		if err != nil {
			c.t.Fatalf("testredis: migrate slot %d: %s: %v", slot, what, err)
		}
	}
	var times MigrationTimes
	times.Start = time.Now()
	must("importing", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must("migrating", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	time.Sleep(hold)
	times.Keys = time.Now()
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must("keys", err)
		if len(keys) == 0 {
			break
		}
		// MIGRATE's own timeout (ms) is below the client's read timeout.
		args := []any{"MIGRATE", host, to.Port, "", 0, 2000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must("MIGRATE", src.Do(ctx, args...).Err())
	}
	// The new owner first, so that the slot is never without one.
	must("node (new owner)", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	times.NewOwner = time.Now()
	time.Sleep(hold)
	must("node (old owner)", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	for _, n := range c.Primaries() {
		if n != from && n != to {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr})
			err := cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err()
			_ = cl.Close() // a one-off client
			must("node (other primary)", err)
		}
	}
	err = poll(clusterWait, func(ctx context.Context) error {
		for _, n := range c.running() {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr})
			s, err := cl.ClusterNodes(ctx).Result()
			_ = cl.Close() // a one-off client
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
			for _, cn := range parseClusterNodes(s) {
				if servesSlot(cn.Slots, slot) != (cn.ID == toID) {
					return fmt.Errorf("%s does not see slot %d on %s yet", n.Addr, slot, to.Addr)
				}
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("testredis: migrate slot %d: %v", slot, err)
	}
	times.Done = time.Now()
	return times
}
