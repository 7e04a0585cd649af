package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// sent is one answered send of the Cluster traffic.
type sent struct {
	room, text, seq string
	at              time.Time
}

// watcher records the messages one client got, per room.
type watcher struct {
	mu    sync.Mutex // guards seqs, order and dups
	seqs  map[string]map[string]bool
	order map[string][]string // seqs as they came
	dups  int
}

// traffic is the load of the Cluster failover and slot migration tests: a
// watcher on each instance joins every room, and one sender per room, on
// alternating instances, sends and awaits each answer, 50 a second, until
// finish.
type traffic struct {
	t        *testing.T
	rooms    []string
	watchers []*watcher

	mu      sync.Mutex // guards acked and refused
	acked   []sent
	refused []sent

	stop        atomic.Bool
	wg          sync.WaitGroup
	unanswered  atomic.Int64
	otherErrors atomic.Int64
}

// startTraffic starts the watchers and senders of rooms on ins.
func startTraffic(t *testing.T, ins []*instance, rooms []string) *traffic {
	tr := &traffic{t: t, rooms: rooms}
	for i, in := range ins {
		c := dial(t, in, fmt.Sprintf("watcher%d", i))
		for _, room := range rooms {
			joinRoom(t, c, map[string]any{"type": "join", "room": room, "history": 0})
		}
		w := &watcher{seqs: map[string]map[string]bool{}, order: map[string][]string{}}
		tr.watchers = append(tr.watchers, w)
		go func() {
			for f := range c.Frames() {
				if f.Type != "message" {
					continue
				}
				w.mu.Lock()
				if w.seqs[f.Room] == nil {
					w.seqs[f.Room] = map[string]bool{}
				}
				if w.seqs[f.Room][f.Seq] {
					w.dups++
				}
				w.seqs[f.Room][f.Seq] = true
				w.order[f.Room] = append(w.order[f.Room], f.Seq)
				w.mu.Unlock()
			}
		}()
	}
	senders := make([]*wstest.Client, len(rooms))
	for ri, room := range rooms {
		senders[ri] = dial(t, ins[ri%len(ins)], fmt.Sprintf("sender%d", ri))
		joinRoom(t, senders[ri], map[string]any{"type": "join", "room": room, "history": 0})
	}
	// Senders stop before their sockets close, however the test ends.
	t.Cleanup(func() { tr.stop.Store(true); tr.wg.Wait() })
	for ri, room := range rooms {
		c := senders[ri]
		tr.wg.Go(func() { tr.send(c, room) })
	}
	return tr
}

// send sends to room from c until stopped.
func (tr *traffic) send(c *wstest.Client, room string) {
	t := tr.t
	for k := 0; !tr.stop.Load(); k++ {
		text := fmt.Sprintf("%s-%04d", room, k)
		if err := c.Say(room, text, text); err != nil {
			t.Error(err)
			return
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == text && (f.Type == "ack" || f.Type == "error") }, wait)
		if err != nil {
			tr.unanswered.Add(1)
			t.Errorf("send %s not answered within %v: %v", text, wait, err)
			return
		}
		s := sent{room: room, text: text, seq: f.Seq, at: time.Now()}
		tr.mu.Lock()
		switch {
		case f.Type == "ack":
			tr.acked = append(tr.acked, s)
		case f.Code == pipeline.CodeUnavailable:
			tr.refused = append(tr.refused, s)
		default:
			tr.otherErrors.Add(1)
			t.Errorf("send %s: %s", text, f.Raw)
			tr.mu.Unlock()
			return
		}
		tr.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// ackedAfter waits until every room has at least n sends acked after at,
// and fails the test after 20 s.
func (tr *traffic) ackedAfter(at time.Time, n int) {
	tr.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tr.mu.Lock()
		after := map[string]int{}
		for _, s := range tr.acked {
			if s.at.After(at) {
				after[s.room]++
			}
		}
		tr.mu.Unlock()
		ok := true
		for _, room := range tr.rooms {
			ok = ok && after[room] >= n
		}
		if ok {
			return
		}
		if tr.unanswered.Load() > 0 || tr.otherErrors.Load() > 0 {
			tr.t.Fatalf("a sender stopped: %d sends unanswered, %d answered with another error", tr.unanswered.Load(), tr.otherErrors.Load())
		}
		if time.Now().After(deadline) {
			tr.t.Fatalf("rooms acked after %v: %v; want at least %d in each of %v", at.Format(time.StampMilli), after, n, tr.rooms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finish stops the senders and fails the test if a send was not answered
// or was answered with anything but an ack or unavailable.
func (tr *traffic) finish() {
	tr.t.Helper()
	tr.stop.Store(true)
	tr.wg.Wait()
	if tr.unanswered.Load() > 0 || tr.otherErrors.Load() > 0 {
		tr.t.Fatalf("%d sends unanswered, %d answered with another error", tr.unanswered.Load(), tr.otherErrors.Load())
	}
}

// delivered checks, after finish, that every acked message that the rooms'
// streams hold reached every watcher, once; it returns the acked messages
// the streams do not hold.
func (tr *traffic) delivered(cc redis.UniversalClient, keys redisstore.Keys) (lost []sent) {
	tr.t.Helper()
	ctx := context.Background()
	stored := map[string]map[string]bool{}
	for _, room := range tr.rooms {
		xs, err := cc.XRange(ctx, keys.Room(room), "-", "+").Result()
		if err != nil {
			tr.t.Fatal(err)
		}
		stored[room] = map[string]bool{}
		for _, x := range xs {
			stored[room][x.ID] = true
		}
	}
	for _, s := range tr.acked {
		if !stored[s.room][s.seq] {
			lost = append(lost, s)
		}
	}
	deadline := time.Now().Add(wait)
	for _, w := range tr.watchers {
		for {
			missing := 0
			w.mu.Lock()
			for _, s := range tr.acked {
				if stored[s.room][s.seq] && !w.seqs[s.room][s.seq] {
					missing++
				}
			}
			dups := w.dups
			w.mu.Unlock()
			if dups > 0 {
				tr.t.Fatalf("a watcher got %d messages twice", dups)
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				tr.t.Fatalf("a watcher is missing %d stored acked messages", missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return lost
}

// inOrder fails the test unless every watcher got each room's messages in
// the order of their seqs.
func (tr *traffic) inOrder() {
	tr.t.Helper()
	for i, w := range tr.watchers {
		w.mu.Lock()
		for room, seqs := range w.order {
			for j := 1; j < len(seqs); j++ {
				if pipeline.CompareSeq(seqs[j-1], seqs[j]) >= 0 {
					w.mu.Unlock()
					tr.t.Fatalf("watcher %d got %s of %s after %s", i, seqs[j], room, seqs[j-1])
				}
			}
		}
		w.mu.Unlock()
	}
}

// counts returns how many sends to room ("": any room) were acked and
// refused, and how many of each between from and to.
func (tr *traffic) counts(room string, from, to time.Time) (acked, refused, ackedBetween, refusedBetween int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	count := func(ss []sent) (all, between int) {
		for _, s := range ss {
			if room != "" && s.room != room {
				continue
			}
			all++
			if s.at.After(from) && s.at.Before(to) {
				between++
			}
		}
		return all, between
	}
	acked, ackedBetween = count(tr.acked)
	refused, refusedBetween = count(tr.refused)
	return acked, refused, ackedBetween, refusedBetween
}
