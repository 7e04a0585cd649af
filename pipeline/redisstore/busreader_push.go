package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
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

// received is one receive of a pushed subscription's connection.
type received struct {
	v   any
	err error
}

// listen follows stream in Pushed mode: it subscribes to the stream's shard
// channel, reads what the stream holds after the configured position, and
// then hands out each push whose previous entry is the last one handed
// out, reading the stream instead whenever a push shows that entries were
// missed and after BlockTime without a push. It returns when ctx is done,
// a read or a receive fails, or the channel is unsubscribed (its slot
// moved to another node of a Cluster).
//
// A goroutine of its own receives from the connection, one message ahead,
// without a timeout (a receive cut by its timeout could leave a push half
// read); closing the connection ends it. The pushes wait in Redis's output
// buffer for the connection while a message is handed out; Redis closes a
// connection whose buffer outgrows its client-output-buffer-limit for
// pubsub, which ends the subscription like a failed read.
func (s *BusSubscriber) listen(ctx context.Context, stream string, out *outlet, fields watermill.LogFields) {
	channel := stream + s.cfg.ChannelSuffix
	ps := s.client.SSubscribe(ctx, channel)
	recv := make(chan received, 1)
	done := make(chan struct{})
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		for {
			v, err := ps.Receive(context.Background()) // ended by Close
			select {
			case recv <- received{v, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// Closing ps ends the receive in progress, so the subscription stops
	// at once when ctx is done.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		close(done)
		_ = ps.Close() // the subscription ends either way
	}()
	// The caller subscribes again; the message is the blocking reader's
	// (see follow), which quietCancel writes at debug level.
	fail := func(err error) {
		if ctx.Err() == nil {
			s.log.Error("stop reading after error", err, fields)
		}
	}
	// Redis confirms the subscription before any push to it, and every
	// entry added after the confirmation is pushed: reading the stream
	// only then misses nothing.
	if err := confirm(recv); err != nil {
		s.reloadSlots(ctx)
		fail(err)
		return
	}
	after, first := s.cfg.After, true
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
	idle := time.NewTimer(s.cfg.BlockTime)
	defer idle.Stop()
	pinged := false
	for ctx.Err() == nil {
		var r received
		select {
		case r = <-recv:
		case <-idle.C:
			if pinged {
				fail(errSilent)
				return
			}
			// Quiet: entries stored by writers that do not push are
			// read now, and the PING proves the channel alive.
			if !catchUp() {
				return
			}
			if err := ps.Ping(ctx); err != nil {
				fail(err)
				return
			}
			pinged = true
			idle.Reset(s.cfg.BlockTime)
			continue
		case <-ctx.Done():
			return
		}
		if r.err != nil {
			fail(r.err)
			return
		}
		pinged = false
		idle.Reset(s.cfg.BlockTime)
		switch m := r.v.(type) {
		case *redis.Message:
			prev, x, ok := parsePush(m.Payload)
			switch {
			case ok && pipeline.CompareSeq(x.ID, after) <= 0:
				// Handed out already, by a read.
			case ok && prev == after:
				after = x.ID
				if !s.deliver(ctx, entryMessage(x), out) {
					return
				}
			default:
				// Entries were missed (or the push is not one):
				// the stream holds them.
				if !catchUp() {
					return
				}
			}
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" {
				s.reloadSlots(ctx)
				fail(fmt.Errorf("redisstore: channel %s unsubscribed by the server", channel))
				return
			}
		}
	}
}

// confirm waits until Redis confirms the subscription whose receives are
// recv.
func confirm(recv <-chan received) error {
	t := time.NewTimer(confirmTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-recv:
			if r.err != nil {
				return fmt.Errorf("redisstore: subscribe: %w", r.err)
			}
			if sub, ok := r.v.(*redis.Subscription); ok && sub.Kind == "ssubscribe" {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("redisstore: subscribe: no confirmation within %v", confirmTimeout)
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

// parsePush decodes a push of append.lua: prev ' ' seq ' ' len(uuid) ' '
// len(metadata) ' ' uuid metadata payload. It returns the entry before the
// pushed one and the pushed entry in Watermill's layout.
func parsePush(p string) (prev string, x redis.XMessage, ok bool) {
	var f [4]string
	for i := range f {
		var found bool
		if f[i], p, found = strings.Cut(p, " "); !found {
			return "", x, false
		}
	}
	nu, err1 := strconv.Atoi(f[2])
	nm, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || nu < 0 || nm < 0 || nu > len(p) || nm > len(p)-nu || f[0] == "" || f[1] == "" {
		return "", x, false
	}
	return f[0], redis.XMessage{ID: f[1], Values: map[string]any{
		redisstream.UUIDHeaderKey: p[:nu],
		"metadata":                p[nu : nu+nm],
		"payload":                 p[nu+nm:],
	}}, true
}
