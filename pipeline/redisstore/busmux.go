package redisstore

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// A multiplexing BusSubscriber (BusSubscriberConfig.Multiplex) reads the
// streams of all its subscriptions with one XREAD per round trip, on one
// connection of its own, in one goroutine: the reader. The reader hands
// each subscription's entries, as one batch, to that subscription's
// goroutine, which hands its messages out one at a time as a plain
// subscription does. A subscription holds at most two batches (one being
// handed out, one queued); one that holds two is left out of the reads
// until its goroutine takes the queued batch, so a slow subscription never
// holds up the others, and nothing it has not room for is read.
//
// A read blocks up to BlockTime. When a subscription is added, or one that
// was left out has room again, the reader must read again at once: its
// blocked read is ended with CLIENT UNBLOCK by a second goroutine, the
// waker. If the server refuses CLIENT UNBLOCK (an ACL without it), the
// reader picks such changes up when its read ends, within BlockTime; that
// is logged once.
//
// Several subscriptions of one stream share its place in the read: it is
// read from the lowest position among those with room, and each gets the
// entries after its own position.
//
// The reader starts with the first subscription and ends once none is
// left, or when a read fails: then every subscription's channel closes
// (after the messages read before are handed out), as when a plain
// subscription's read fails.

// muxSub is one subscription of a multiplexing BusSubscriber.
type muxSub struct {
	stream string
	ctx    context.Context
	// batches carries the entries read for it, oldest first; only the
	// reader sends on it (only when it is empty) and closes it.
	batches chan []redis.XMessage
	// after is the ID of the last entry read for it; only the reader
	// uses it.
	after string
	// left is set by the reader when it left the subscription out of a
	// read for want of room, and cleared by the subscription's goroutine,
	// which then wakes the reader. Guarded by the subscriber's mu.
	left bool
}

// busMux is the state of a multiplexing subscriber's reader, guarded by
// the subscriber's mu.
type busMux struct {
	running bool
	subs    map[*muxSub]struct{}
	// reading: the reader's read round is in flight; round counts the
	// rounds, so that the waker can tell one from the next.
	reading bool
	round   uint64
	// idle wakes a reader that waits for a subscription with room; unblock
	// asks the running reader's waker to end the read in flight (each
	// reader has its own). Both hold one wake-up.
	idle, unblock chan struct{}
	// connID is the reader's connection's CLIENT ID, 0 until it is known.
	connID int64
	// refusalLogged is set once a refused CLIENT UNBLOCK was logged.
	refusalLogged bool
}

// subscribeMux adds a subscription of stream after the ID after to the
// reader, starting the reader if it is not running, and starts the
// subscription's goroutine. s.mu must be held.
func (s *BusSubscriber) subscribeMux(ctx context.Context, stream, after string, out *outlet, cancel context.CancelFunc, stopOnClose func() bool) {
	m := &s.mux
	sub := &muxSub{stream: stream, ctx: ctx, after: after, batches: make(chan []redis.XMessage, 1)}
	if m.subs == nil {
		m.subs = make(map[*muxSub]struct{})
		m.idle = make(chan struct{}, 1)
	}
	m.subs[sub] = struct{}{}
	if !m.running {
		m.running = true
		unblock := make(chan struct{}, 1)
		m.unblock = unblock
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			s.readMux(unblock)
		}()
	}
	s.wakeLocked()
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.handOutMux(sub, out)
		s.mu.Lock()
		delete(m.subs, sub)
		s.wakeLocked() // a reader waiting for room may have no subscription left
		s.mu.Unlock()
		stopOnClose()
		cancel()
		out.close()
	}()
}

// wakeLocked makes the reader read again at once with the current
// subscriptions. s.mu must be held.
func (s *BusSubscriber) wakeLocked() {
	ch := s.mux.idle
	if s.mux.reading {
		ch = s.mux.unblock
	}
	select {
	case ch <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// handOutMux hands out the messages of the batches the reader sends sub,
// until sub's context is done or the reader closes its batches.
func (s *BusSubscriber) handOutMux(sub *muxSub, out *outlet) {
	for {
		var entries []redis.XMessage
		select {
		case b, ok := <-sub.batches:
			if !ok {
				return
			}
			entries = b
		case <-sub.ctx.Done():
			return
		}
		// Under mu: the reader checks for room and sets left at once.
		s.mu.Lock()
		if sub.left {
			sub.left = false
			s.wakeLocked()
		}
		s.mu.Unlock()
		for _, x := range entries {
			if !s.deliver(sub.ctx, entryMessage(x), out) {
				return
			}
		}
	}
}

// muxRead is one stream of a round's XREAD: the subscriptions of it with
// room, read from the lowest position among them.
type muxRead struct {
	stream, after string
	subs          []*muxSub
}

// readMux is the reader: it reads every subscription with room in one
// XREAD per round, until no subscription is left, the subscriber is
// closed or a read fails. Its waker takes wake-ups from unblock.
func (s *BusSubscriber) readMux(unblock chan struct{}) {
	m := &s.mux
	conn := s.client.(conner).Conn()
	// Not s.closing: once the subscriber is closed, the waker still ends
	// the read in flight, so that Close returns soon.
	ctx, stop := context.WithCancel(context.Background())
	var waker sync.WaitGroup
	defer func() {
		stop()
		// No CLIENT UNBLOCK of the connection once it is back in the
		// pool, where another caller may block on it.
		waker.Wait()
		_ = conn.Close() // back to the pool, or dropped if broken
	}()
	id, err := conn.ClientID(ctx).Result()
	if err == nil {
		s.mu.Lock()
		m.connID = id
		s.mu.Unlock()
		waker.Go(func() { s.wakeMux(ctx, unblock) })
	}
	var reads []muxRead
	var args []string
	for err == nil {
		s.mu.Lock()
		reads = s.roundLocked(reads[:0])
		if len(m.subs) == 0 || s.closing.Err() != nil {
			s.endMuxLocked()
			s.mu.Unlock()
			return
		}
		if len(reads) == 0 {
			s.mu.Unlock()
			select {
			case <-m.idle:
			case <-s.closing.Done():
			}
			continue
		}
		// Drain a pending wake-up: this round reads what it asked for.
		select {
		case <-m.idle:
		default:
		}
		m.reading = true
		m.round++
		s.mu.Unlock()

		args = args[:0]
		for _, r := range reads {
			args = append(args, r.stream)
		}
		for _, r := range reads {
			args = append(args, r.after)
		}
		var xs []redis.XStream
		xs, err = conn.XRead(ctx, &redis.XReadArgs{Streams: args, Count: int64(s.cfg.ReadCount), Block: s.cfg.BlockTime}).Result()
		s.mu.Lock()
		m.reading = false
		s.mu.Unlock()
		if errors.Is(err, redis.Nil) {
			err = nil // nothing new within BlockTime, or unblocked
			continue
		}
		if err != nil {
			break
		}
		for _, x := range xs {
			for _, r := range reads {
				if r.stream == x.Stream {
					handOver(r.subs, x.Messages)
					break
				}
			}
		}
	}
	if s.closing.Err() == nil {
		// Every subscription closes; their callers subscribe again.
		s.log.Error("stop reading after error", err, watermill.LogFields{"streams": len(reads)})
	}
	s.mu.Lock()
	s.endMuxLocked()
	s.mu.Unlock()
}

// roundLocked appends to reads the streams to read this round: those of
// the subscriptions with room, each once, from the lowest position among
// them. A subscription without room is marked left. s.mu must be held.
func (s *BusSubscriber) roundLocked(reads []muxRead) []muxRead {
	for sub := range s.mux.subs {
		switch {
		case sub.ctx.Err() != nil:
			continue // its goroutine removes it
		case len(sub.batches) > 0:
			sub.left = true
			continue
		}
		i := slices.IndexFunc(reads, func(r muxRead) bool { return r.stream == sub.stream })
		if i < 0 {
			// Reuse the subs array of an earlier round's read.
			reads = slices.Grow(reads, 1)[:len(reads)+1]
			i = len(reads) - 1
			reads[i] = muxRead{stream: sub.stream, after: sub.after, subs: reads[i].subs[:0]}
		} else if compareIDs(sub.after, reads[i].after) < 0 {
			reads[i].after = sub.after
		}
		reads[i].subs = append(reads[i].subs, sub)
	}
	return reads
}

// handOver sends each of subs (which have room) the entries after its
// position, and moves its position to the last of them.
func handOver(subs []*muxSub, entries []redis.XMessage) {
	for _, sub := range subs {
		i, _ := slices.BinarySearchFunc(entries, sub.after, func(x redis.XMessage, id string) int {
			if compareIDs(x.ID, id) <= 0 {
				return -1
			}
			return 1
		})
		if i == len(entries) {
			continue // nothing after its position
		}
		sub.after = entries[len(entries)-1].ID
		sub.batches <- entries[i:] // it had room: only the reader sends
	}
}

// compareIDs compares two stream entry IDs ("ms-seq", or "ms" for
// "ms-0") by their numbers; an ID it cannot parse is the lowest.
func compareIDs(a, b string) int {
	ams, aseq := parseID(a)
	bms, bseq := parseID(b)
	if c := cmp.Compare(ams, bms); c != 0 {
		return c
	}
	return cmp.Compare(aseq, bseq)
}

func parseID(id string) (ms, seq uint64) {
	m, q, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(q, 10, 64)
	return ms, seq
}

// endMuxLocked ends the reader: every subscription's batches close (each
// hands out what it holds, then closes its channel) and the next
// subscription starts a new reader. s.mu must be held.
func (s *BusSubscriber) endMuxLocked() {
	m := &s.mux
	for sub := range m.subs {
		close(sub.batches)
		delete(m.subs, sub)
	}
	m.running = false
	m.connID = 0
}

// wakeMux is the waker: on each wake-up from unblock for a read in flight
// it ends that read with CLIENT UNBLOCK, trying again while the read has
// not reached the server yet, until ctx is done. Once the server refuses
// the command for want of permission, it stops trying.
func (s *BusSubscriber) wakeMux(ctx context.Context, unblock <-chan struct{}) {
	m := &s.mux
	for {
		select {
		case <-unblock:
		case <-ctx.Done():
			return
		}
		for {
			s.mu.Lock()
			reading, round, id := m.reading, m.round, m.connID
			s.mu.Unlock()
			if !reading || id == 0 {
				break
			}
			n, err := s.client.ClientUnblock(ctx, id).Result()
			if redis.IsPermissionError(err) {
				s.mu.Lock()
				first := !m.refusalLogged
				m.refusalLogged = true
				s.mu.Unlock()
				if first {
					s.log.Error("cannot end blocked bus reads (CLIENT UNBLOCK); new and drained subscriptions wait up to the block time", err, nil)
				}
				return // the read ends within BlockTime anyway
			}
			if err == nil && n == 1 {
				break
			}
			// The read has not blocked yet, or has just ended, or the
			// command failed: look again shortly.
			s.mu.Lock()
			same := m.reading && m.round == round
			s.mu.Unlock()
			if !same {
				break
			}
			pause := unblockRetry
			if err != nil {
				pause = unblockErrorRetry
			}
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// The waker's pauses before it tries again to end a read: one that had
// not blocked yet, and after CLIENT UNBLOCK failed (a connection error:
// the read itself is likely to fail too).
const (
	unblockRetry      = 200 * time.Microsecond
	unblockErrorRetry = 100 * time.Millisecond
)

// conner is a client of one Redis server, which can lend one connection
// for a caller's exclusive use; a Cluster client cannot.
type conner interface {
	Conn() *redis.Conn
}

var _ conner = (*redis.Client)(nil)
