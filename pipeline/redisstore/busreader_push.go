package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// confirmTimeout bounds the wait for Redis to confirm a pushed
// subscription's SSUBSCRIBE.
const confirmTimeout = 5 * time.Second

// errSilent reports a pushed subscription's channel that did not answer a
// PING within BlockTime.
var errSilent = errors.New("redisstore: bus channel did not answer PING")

// listen follows stream in Pushed mode: it subscribes to the stream's shard
// channel, reads what the stream holds after the configured position, and
// then hands out each push whose previous entry is the last one handed
// out, reading the stream instead whenever a push shows that entries were
// missed and after BlockTime without a push. It returns when ctx is done,
// a read or a receive fails, or the channel is unsubscribed (its slot
// moved to another node of a Cluster).
//
// The pushes wait in the subscription's connection (and in Redis's output
// buffer for it) while a message is handed out; Redis closes a connection
// whose buffer outgrows its client-output-buffer-limit for pubsub, which
// ends the subscription like a failed read.
func (s *BusSubscriber) listen(ctx context.Context, stream string, out *outlet, fields watermill.LogFields) {
	ps := s.client.SSubscribe(ctx, stream)
	// Closing ps ends a receive in progress, so the subscription stops at
	// once when ctx is done (a read in progress does not wait).
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
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
	if err := confirm(ctx, ps); err != nil {
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
	pinged := false
	for ctx.Err() == nil {
		v, err := ps.ReceiveTimeout(ctx, s.cfg.BlockTime)
		if isTimeout(err) {
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
			continue
		}
		if err != nil {
			fail(err)
			return
		}
		pinged = false
		switch m := v.(type) {
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
				fail(fmt.Errorf("redisstore: channel %s unsubscribed by the server", stream))
				return
			}
		}
	}
}

// confirm waits until Redis confirms ps's subscription.
func confirm(ctx context.Context, ps *redis.PubSub) error {
	deadline := time.Now().Add(confirmTimeout)
	for {
		v, err := ps.ReceiveTimeout(ctx, time.Until(deadline))
		if err != nil {
			return fmt.Errorf("redisstore: subscribe: %w", err)
		}
		if sub, ok := v.(*redis.Subscription); ok && sub.Kind == "ssubscribe" {
			return nil
		}
	}
}

// isTimeout reports a receive that found nothing within its timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
