package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// Bounds of the failover test. Every wait ends with a failure, never a
// hang; the clients stop sending after maxSends each.
const (
	// wait bounds each expected event: an ack, a reconnect, progress.
	wait = 15 * time.Second
	// sendEvery paces each client's sends.
	sendEvery = 10 * time.Millisecond
	// maxSends caps each client's sends.
	maxSends = 3000
	// progressStep is the number of acks each client must get between two
	// steps of the rolling restart.
	progressStep = 5
	// room is where the clients chat.
	room = "lobby"
)

// instance is one chatstream server of the test on a fixed address, so it
// can be stopped and started again where Caddy expects it.
type instance struct {
	addr string
	*testserver.Instance
}

// startInstance runs a chatstream server at addr ("127.0.0.1:0" for a
// free port) on the Redis backend, trusting 127.0.0.1 (Caddy) to name the
// client in X-Forwarded-For.
func startInstance(t *testing.T, rs *testredis.Server, addr string) *instance {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := backend.Open(backend.Config{RedisURL: rs.URL, RedisPrefix: rs.Prefix, Partitions: 4, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	in := testserver.Start(t, server.Config{
		Addr: addr, Backend: b, Logger: log,
		WS:            ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
		Admission:     admission.Config{TrustedProxies: []string{"127.0.0.1/32"}},
		ReportEvery:   100 * time.Millisecond,
		PresenceEvery: 100 * time.Millisecond,
	})
	return &instance{addr: in.Addr().String(), Instance: in}
}

// TestFailoverThroughCaddy runs the real Caddy with deploy/Caddyfile in
// front of three chatstream instances sharing one Redis, and two clients
// that reach them only through Caddy and chat in one room. The instances
// are restarted one after the other (each stopped, then started again on
// its address): every client is on one of them, so each is cut off at
// least once, reconnects through Caddy to an instance still running and
// resumes with `since` its last seq, and resends an unacknowledged message
// with the same ref (docs/PROTOCOL.md §11.3, §11.4). Both keep sending
// throughout. In the end each client has received exactly the room's
// stored messages, in the stored order: nothing lost, nothing twice; and
// every send it was acked is stored exactly once.
func TestFailoverThroughCaddy(t *testing.T) {
	rs := testredis.Start(t)
	ins := []*instance{
		startInstance(t, rs, "127.0.0.1:0"),
		startInstance(t, rs, "127.0.0.1:0"),
		startInstance(t, rs, "127.0.0.1:0"),
	}
	caddy := startCaddy(t, []string{ins[0].addr, ins[1].addr, ins[2].addr})

	peers := []*peer{newPeer(t, caddy.URL, "alice"), newPeer(t, caddy.URL, "bob")}
	for _, p := range peers {
		if err := p.connect(); err != nil {
			t.Fatal(err)
		}
	}
	stopSending := make(chan struct{})
	errs := make(chan error, len(peers))
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			if err := p.run(stopSending); err != nil {
				errs <- fmt.Errorf("%s: %w", p.user, err)
			}
		})
	}
	// stopped ends the clients' sending once, whatever happens below.
	stopped := sync.OnceFunc(func() {
		close(stopSending)
		wg.Wait()
	})
	t.Cleanup(stopped)

	// progress waits until every client has had progressStep more acks.
	progress := func(step string) {
		t.Helper()
		want := make([]int64, len(peers))
		for i, p := range peers {
			want[i] = p.acks.Load() + progressStep
		}
		deadline := time.Now().Add(wait)
		for {
			select {
			case err := <-errs:
				t.Fatalf("%s: %v", step, err)
			default:
			}
			done := true
			for i, p := range peers {
				done = done && p.acks.Load() >= want[i]
			}
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the clients made no progress within %v", step, wait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	progress("start")
	for i := range ins {
		ins[i].Stop()
		progress(fmt.Sprintf("instance %d stopped", i))
		// Caddy answers every request while an instance is gone, and once
		// the passive check's fail_duration (one health interval) has
		// passed, the active check alone keeps the stopped instance out:
		// requests are not tried on it first. With least_conn, the
		// stopped instance, holding no connection, would be picked first
		// by nearly every request and each would wait lb_try_interval.
		time.Sleep(3 * healthInterval)
		retried := 0
		for range 20 {
			start := time.Now()
			if code, body := get(t, caddy.URL, "", "/healthz", nil); code != http.StatusOK {
				t.Fatalf("instance %d stopped: GET /healthz through Caddy: got %d %q, want 200", i, code, body)
			}
			if time.Since(start) >= lbTryInterval {
				retried++
			}
		}
		if retried > 5 {
			t.Errorf("instance %d stopped: %d of 20 requests took lb_try_interval or longer, want (nearly) none tried on the stopped instance", i, retried)
		}
		ins[i] = startInstance(t, rs, ins[i].addr)
		progress(fmt.Sprintf("instance %d started again", i))
	}
	stopped()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The room as stored, read through Caddy by a new client.
	reader := newPeer(t, caddy.URL, "carol")
	reader.since = "0-0"
	if err := reader.connect(); err != nil {
		t.Fatal(err)
	}
	stored := reader.got
	if len(stored) == 0 {
		t.Fatal("the room holds no message")
	}
	last := stored[len(stored)-1].Seq

	for _, p := range peers {
		if err := p.drain(last); err != nil {
			t.Fatalf("%s: %v", p.user, err)
		}
		t.Logf("%s: %d sent, %d received, %d reconnects", p.user, len(p.acked), len(p.got), p.reconnects)
		if p.reconnects == 0 {
			t.Errorf("%s: got no reconnect, want at least one (every instance was stopped once)", p.user)
		}
		if got, want := ids(p.got), ids(stored); !slices.Equal(got, want) {
			t.Errorf("%s: received %d messages, stored %d; first difference at %d:\n got  %v\n want %v",
				p.user, len(got), len(want), firstDiff(got, want), around(got, firstDiff(got, want)), around(want, firstDiff(got, want)))
		}
		// Every acked send is stored once, under the seq of its ack, in
		// the order it was sent; and nothing of this user is stored that
		// was not acked.
		var refs []string
		for _, m := range stored {
			if m.User != p.user {
				continue
			}
			if seq, ok := p.acked[m.Ref]; !ok || seq != m.Seq {
				t.Errorf("%s: stored ref %q seq %s: acked with seq %q (acked: %v)", p.user, m.Ref, m.Seq, seq, ok)
			}
			refs = append(refs, m.Ref)
		}
		if len(refs) != len(p.acked) || !slices.IsSorted(refs) {
			t.Errorf("%s: stored refs %d (sorted: %v), acked %d", p.user, len(refs), slices.IsSorted(refs), len(p.acked))
		}
	}
}

// peer is a chat client behind Caddy that survives the loss of its
// instance as docs/PROTOCOL.md §11 says: it reconnects with backoff, joins
// the room again with `since` the last seq it received, and resends an
// unacknowledged send with the same ref unless the resumed history shows
// it stored. One goroutine at a time uses it; acks is read by others.
type peer struct {
	t          testing.TB
	base, user string
	c          *wstest.Client
	// since is the seq to resume after; "" joins without history.
	since string
	// got are the messages received, in order; seen holds their seqs.
	got  []wstest.Frame
	seen map[string]bool
	// acked maps each acknowledged ref to its seq.
	acked map[string]string
	// pending is the ref sent and not acknowledged yet, sentAt when;
	// retryAt, when set, is when to send it again after `unavailable`.
	pending string
	sentAt  time.Time
	retryAt time.Time
	sends   int
	// reconnects counts connections after the first.
	reconnects int
	// acks counts acknowledged sends, for the test's progress checks.
	acks atomic.Int64
}

func newPeer(t testing.TB, base, user string) *peer {
	p := &peer{t: t, base: base, user: user, seen: map[string]bool{}, acked: map[string]string{}}
	t.Cleanup(func() {
		if p.c != nil {
			p.c.Close()
		}
	})
	return p
}

// connect dials Caddy and joins the room, resuming after p.since, until it
// succeeds or wait passes. Dials refused while an instance goes away
// (Caddy's 502, an instance's 503) are retried with backoff.
func (p *peer) connect() error {
	if p.c != nil {
		p.c.Close() // the old connection has ended; closing it again is harmless
		p.c = nil
	}
	deadline := time.Now().Add(wait)
	backoff := 20 * time.Millisecond
	var lastErr error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			time.Sleep(backoff)
			backoff = min(2*backoff, 500*time.Millisecond)
		}
		c, err := wstest.Dial(p.base, p.user)
		if err != nil {
			lastErr = err
			continue
		}
		join := map[string]any{"type": "join", "room": room, "history": 0}
		if p.since != "" {
			join["since"] = p.since
		}
		if err := c.Send(join); err != nil {
			c.Close()
			lastErr = err
			continue
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" || f.Type == "error" }, wait)
		if err != nil || f.Type != "joined" {
			c.Close()
			lastErr = fmt.Errorf("join: %v %s", err, f.Raw)
			continue
		}
		msgs, err := p.olderPages(c, f)
		if err != nil {
			c.Close()
			lastErr = err
			continue
		}
		p.c = c
		for _, m := range msgs {
			if err := p.record(m); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("no connection through Caddy within %v: %w", wait, lastErr)
}

// maxPages bounds the history pages one join reads.
const maxPages = 100

// olderPages returns the messages of joined preceded by those older ones
// of the range that did not fit its page (joined.more), read with history
// `before` the oldest held and `after` since (docs/PROTOCOL.md §6.5).
func (p *peer) olderPages(c *wstest.Client, joined wstest.Frame) ([]wstest.Frame, error) {
	msgs, more := joined.History, joined.More
	for range maxPages {
		if !more || len(msgs) == 0 {
			return msgs, nil
		}
		req := map[string]any{"type": "history", "room": room, "before": msgs[0].Seq, "limit": 500}
		if p.since != "" {
			req["after"] = p.since
		}
		if err := c.Send(req); err != nil {
			return nil, err
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "history" || f.Type == "error" }, wait)
		if err != nil || f.Type != "history" {
			return nil, fmt.Errorf("history: %v %s", err, f.Raw)
		}
		msgs, more = append(f.Messages, msgs...), f.More
	}
	return nil, fmt.Errorf("history: more than %d pages", maxPages)
}

// reconnect replaces a lost connection and settles the pending send:
// acknowledged if the resumed history holds it, else sent again.
func (p *peer) reconnect() error {
	p.reconnects++
	if err := p.connect(); err != nil {
		return err
	}
	if p.pending == "" {
		return nil
	}
	for _, m := range slices.Backward(p.got) {
		if m.User == p.user && m.Ref == p.pending {
			p.ack(m.Ref, m.Seq)
			return nil
		}
	}
	p.send(p.pending)
	return nil
}

// record takes a received message; a seq received before is an error.
func (p *peer) record(m wstest.Frame) error {
	if m.Room != room {
		return fmt.Errorf("message of room %q: %s", m.Room, m.Raw)
	}
	if p.seen[m.Seq] {
		return fmt.Errorf("seq %s received twice: %s", m.Seq, m.Raw)
	}
	p.seen[m.Seq] = true
	p.got = append(p.got, m)
	p.since = m.Seq
	return nil
}

// send sends a message with ref and makes it the pending one.
func (p *peer) send(ref string) {
	p.pending, p.sentAt, p.retryAt = ref, time.Now(), time.Time{}
	// A write error means the connection is gone: the next read says so.
	_ = p.c.Say(room, "message "+ref, ref)
}

func (p *peer) ack(ref, seq string) {
	if prev, ok := p.acked[ref]; ok && prev != seq {
		p.t.Errorf("%s: ref %s acked with seq %s, then %s", p.user, ref, prev, seq)
	}
	p.acked[ref] = seq
	p.pending = ""
	p.acks.Add(1)
}

// step handles the next frame, or reconnects when the connection has
// ended; it returns after at most poll when nothing arrives.
func (p *peer) step(poll time.Duration) error {
	f, err := p.c.Next(poll)
	switch {
	case errors.Is(err, wstest.ErrTimeout):
		if p.pending != "" && time.Since(p.sentAt) > wait {
			return fmt.Errorf("no ack for %s within %v", p.pending, wait)
		}
		return nil
	case err != nil:
		return p.reconnect()
	}
	switch f.Type {
	case "message":
		return p.record(f)
	case "ack":
		if f.Ref != p.pending {
			return fmt.Errorf("ack of %q while %q is pending: %s", f.Ref, p.pending, f.Raw)
		}
		p.ack(f.Ref, f.Seq)
	case "error":
		// unavailable: the message may or may not be stored; it is sent
		// again with the same ref, after a reconnect when the instance is
		// stopping (it closes the connection), else after retryPause.
		if f.Code != "unavailable" || f.Ref != p.pending {
			return fmt.Errorf("error frame: %s", f.Raw)
		}
		p.retryAt = time.Now().Add(retryPause)
	}
	return nil
}

// retryPause is the pause before a send answered `unavailable` is sent
// again on the same connection.
const retryPause = 100 * time.Millisecond

// run sends a message every sendEvery, one at a time, until stopSending is
// closed (or maxSends), then returns once its last send is acknowledged.
func (p *peer) run(stopSending <-chan struct{}) error {
	next := time.Now()
	for {
		select {
		case <-stopSending:
			if p.pending == "" {
				return nil
			}
		default:
			if p.pending != "" && !p.retryAt.IsZero() && time.Now().After(p.retryAt) {
				p.send(p.pending)
			}
			if p.pending == "" && p.sends < maxSends && !time.Now().Before(next) {
				p.sends++
				p.send(fmt.Sprintf("%s-%05d", p.user, p.sends))
				next = time.Now().Add(sendEvery)
			}
		}
		if err := p.step(sendEvery); err != nil {
			return err
		}
	}
}

// drain receives until the message with seq last has arrived.
func (p *peer) drain(last string) error {
	deadline := time.Now().Add(wait)
	for !p.seen[last] {
		if time.Now().After(deadline) {
			return fmt.Errorf("message %s not received within %v (got %d messages)", last, wait, len(p.got))
		}
		if err := p.step(100 * time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// ids returns "seq id" of each message.
func ids(ms []wstest.Frame) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Seq + " " + m.ID
	}
	return out
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// around returns up to three elements of s from i.
func around(s []string, i int) []string { return s[min(i, len(s)):min(i+3, len(s))] }
