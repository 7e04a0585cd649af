package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// confirmTimeout bounds the wait for Redis to confirm a pushed
// subscription's SSUBSCRIBE. Like a round trip's timeout, it only ends a
// subscription that cannot start; the caller subscribes again.
const confirmTimeout = 5 * time.Second

// errSilent reports a pushed subscription's channel that did not answer a
// PING within BlockTime.
var errSilent = errors.New("redisstore: bus channel did not answer PING")

// listen follows stream in Pushed mode: it subscribes to the stream's shard
// channel, reads what the stream holds after the position from, and
// then hands out each push whose previous entry is the last one handed
// out, reading the stream instead whenever a push shows that entries were
// missed, and when the channel has been quiet for BlockTime. It returns
// when ctx is done, a read or a receive fails, the channel does not answer
// a PING, the channel is unsubscribed (its slot moved to another node
// of a Cluster), or the primary changed (PrimaryChanges). It returns the
// last entry handed out, and moved set when the primary changed: the
// caller then listens again from there, on the new primary.
//
// It receives without a timeout (a receive cut by its timeout could leave
// a push half read). A watchdog goroutine (see watch) PINGs a channel
// quiet for BlockTime, and closes the connection when the PING is not
// answered within another BlockTime; the PONG is what makes listen read
// the stream when quiet. The pushes wait in Redis's output buffer for the
// connection while a message is handed out; Redis closes a connection
// whose buffer outgrows its client-output-buffer-limit for pubsub, which
// ends the subscription like a failed read.
func (s *BusSubscriber) listen(ctx context.Context, stream, from string, out *outlet, fields watermill.LogFields) (after string, moved bool) {
	channel := stream + s.cfg.ChannelSuffix
	// Counted before subscribing: a change while the subscription
	// connects ends it, as it may have connected to the old primary.
	var primary uint64
	if s.cfg.PrimaryChanges != nil {
		primary = s.cfg.PrimaryChanges()
	}
	ps := s.client.SSubscribe(ctx, channel)
	// Closing ps ends the receive in progress, so the subscription stops
	// at once when ctx is done.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	var wd watchdog
	defer func() {
		stop()
		_ = ps.Close() // the subscription ends either way
		wd.stop()
	}()
	// The caller subscribes again; the message is the blocking reader's
	// (see follow), which quietCancel writes at debug level.
	fail := func(err error) {
		if ctx.Err() == nil {
			if wd.moved.Load() {
				// Logged once per change, by the client's primaryWatch.
				s.log.Debug("subscribe again on the new primary", fields)
				moved = true
				return
			}
			if wd.silent.Load() {
				err = errSilent
			}
			s.log.Error("stop reading after error", err, fields)
		}
	}
	// Redis confirms the subscription before any push to it, and every
	// entry added after the confirmation is pushed: reading the stream
	// only then misses nothing.
	if err := confirm(ctx, ps); err != nil {
		s.reloadSlots(ctx)
		fail(err)
		return
	}
	after, first := from, true
	catchUp := func() bool {
		for {
			res := s.read(ctx, stream, after, first, -1)
			first = false
			if errors.Is(res.err, redis.Nil) {
				return true
			}
			if res.err != nil {
				fail(res.err)
				return false
			}
			position := after
			if n := len(res.entries); n > 0 {
				after = res.entries[n-1].ID
				s.heard(after)
			}
			if !s.handOut(ctx, res, position, out) {
				return false
			}
			if len(res.entries) < s.cfg.ReadCount {
				return true
			}
		}
	}
	if !catchUp() {
		return
	}
	wd.start(s, ps, primary)
	for ctx.Err() == nil {
		wd.waiting.Store(time.Now().UnixNano())
		v, err := ps.Receive(context.Background()) // ended by Close
		wd.waiting.Store(0)
		if err != nil {
			fail(err)
			return
		}
		switch m := v.(type) {
		case *redis.Message:
			x, ok := parsePush(m.Payload)
			switch {
			case ok && pipeline.CompareSeq(x.id, after) <= 0:
				// Handed out already, by a read.
			case ok && x.prev == after:
				after = x.id
				s.heard(after)
				if !s.deliver(ctx, x.toMessage(), out) {
					return
				}
			default:
				// Entries were missed (or the push is not one):
				// the stream holds them.
				if !catchUp() {
					return
				}
			}
		case *redis.Pong:
			// Quiet for BlockTime: entries stored by writers that do
			// not push are read now.
			if !catchUp() {
				return
			}
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" {
				s.reloadSlots(ctx)
				fail(fmt.Errorf("redisstore: channel %s unsubscribed by the server", channel))
				return
			}
		}
	}
	return
}

// watchdog watches a pushed subscription's receives: a receive that has
// waited BlockTime gets a PING sent, and one still waiting BlockTime after
// that has its connection closed (silent set), which ends it. It also
// closes the connection (moved set) once the primary changed, which makes
// listen return for its caller to listen again.
type watchdog struct {
	// waiting is when the receive in progress started (Unix ns), 0
	// while none is.
	waiting atomic.Int64
	silent  atomic.Bool
	moved   atomic.Bool
	done    chan struct{}
	ended   chan struct{}
}

// start runs the watchdog of ps's receives until stop, ticking four times
// per BlockTime; primary is PrimaryChanges' count when ps subscribed.
func (w *watchdog) start(s *BusSubscriber, ps *redis.PubSub, primary uint64) {
	w.done, w.ended = make(chan struct{}), make(chan struct{})
	block := s.cfg.BlockTime
	go func() {
		defer close(w.ended)
		tick := time.NewTicker(max(block/4, time.Millisecond))
		defer tick.Stop()
		var pinged int64 // the wait a PING was sent for
		var pingedAt time.Time
		for {
			select {
			case <-w.done:
				return
			case now := <-tick.C:
				if s.cfg.PrimaryChanges != nil && s.cfg.PrimaryChanges() != primary {
					w.moved.Store(true)
					_ = ps.Close()
					return
				}
				since := w.waiting.Load()
				switch {
				case since == 0 || now.Sub(time.Unix(0, since)) < block:
				case pinged != since:
					pinged, pingedAt = since, now
					// A failed PING fails the receive too.
					_ = ps.Ping(context.Background())
				case now.Sub(pingedAt) >= block:
					w.silent.Store(true)
					_ = ps.Close()
					return
				}
			}
		}
	}()
}

// stop ends the watchdog, if it was started, and waits for it.
func (w *watchdog) stop() {
	if w.done != nil {
		close(w.done)
		<-w.ended
	}
}

// confirm waits until Redis confirms ps's subscription. A receive cut by
// the timeout ends the subscription, so it cannot leave anything half
// read behind.
func confirm(ctx context.Context, ps *redis.PubSub) error {
	deadline := time.Now().Add(confirmTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 { // a zero timeout would wait for ever
			return fmt.Errorf("redisstore: subscribe: no confirmation within %v", confirmTimeout)
		}
		v, err := ps.ReceiveTimeout(ctx, left)
		if err != nil {
			return fmt.Errorf("redisstore: subscribe: %w", err)
		}
		if sub, ok := v.(*redis.Subscription); ok && sub.Kind == "ssubscribe" {
			return nil
		}
	}
}

// reloadSlots makes a Cluster client reload its slot map: a subscription
// refused (MOVED) or unsubscribed because its slot moved is routed by the
// map, which go-redis otherwise reloads only every minute for pub/sub.
func (s *BusSubscriber) reloadSlots(ctx context.Context) {
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		cc.ReloadState(ctx)
	}
}

// handOut hands out a read's gap message, if it reports one after
// position, and then its entries; it returns false when ctx is done first.
func (s *BusSubscriber) handOut(ctx context.Context, res readResult, position string, out *outlet) bool {
	if res.gap != "" && !s.deliver(ctx, gapMessage(position, res.gap), out) {
		return false
	}
	for _, x := range res.entries {
		if !s.deliver(ctx, entryMessage(x), out) {
			return false
		}
	}
	return true
}

// push is a push of append.lua: the bus entry before the pushed one
// (prev) and the pushed entry's ID and fields.
type push struct {
	prev, id, uuid, metadata, payload string
}

// parsePush decodes a push of append.lua: prev ' ' seq ' ' len(uuid) ' '
// len(metadata) ' ' uuid metadata payload.
func parsePush(p string) (x push, ok bool) {
	var f [4]string
	for i := range f {
		var found bool
		if f[i], p, found = strings.Cut(p, " "); !found {
			return x, false
		}
	}
	nu, err1 := strconv.Atoi(f[2])
	nm, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || nu < 0 || nm < 0 || nu > len(p) || nm > len(p)-nu || f[0] == "" || f[1] == "" {
		return x, false
	}
	return push{prev: f[0], id: f[1], uuid: p[:nu], metadata: p[nu : nu+nm], payload: p[nu+nm:]}, true
}

// toMessage is entryMessage of the pushed entry. It builds the entry's
// field map only for an entry that decodeFast's layout does not fit.
func (x push) toMessage() *message.Message {
	if msg, ok := decodeParts(x.uuid, x.payload, x.metadata); ok {
		setSeq(msg, x.id)
		return msg
	}
	return entryMessage(x.entry())
}

// entry is the pushed entry as read from the stream, in Watermill's layout.
func (x push) entry() redis.XMessage {
	return redis.XMessage{ID: x.id, Values: map[string]any{
		redisstream.UUIDHeaderKey: x.uuid,
		"metadata":                x.metadata,
		"payload":                 x.payload,
	}}
}

// heard tells the subscription's Heard, if any, that the stream holds id.
func (s *BusSubscriber) heard(id string) {
	if s.cfg.Heard != nil {
		s.cfg.Heard(id)
	}
}
