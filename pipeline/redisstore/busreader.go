package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// Defaults of BusSubscriberConfig.
const (
	// DefaultBusReadCount is how many entries one read of a stream takes at
	// most (XREAD COUNT). A subscription holds at most twice as many
	// messages: a full batch being handed out and the next one, read
	// ahead.
	DefaultBusReadCount = 256
	// DefaultBusBlockTime is how long one read waits for new entries
	// (XREAD BLOCK). It bounds how long a stopped subscription keeps its
	// goroutine and its connection.
	DefaultBusBlockTime = time.Second
	// DefaultNackResendDelay is the pause before a nacked message is
	// delivered again.
	DefaultNackResendDelay = 10 * time.Millisecond
	// DefaultBusAfter starts a subscription at the oldest entry kept.
	DefaultBusAfter = "0-0"
)

// BusSubscriberConfig configures a BusSubscriber. A zero field takes the
// default given in its comment.
type BusSubscriberConfig struct {
	// After is the entry ID every subscription starts after (exclusive):
	// "0-0" delivers every entry kept, the stream's last ID only what is
	// added later. It must be an ID, not "$": a subscription keeps its
	// position by the last ID it read. Default DefaultBusAfter.
	After string
	// ReadCount caps the entries one read takes. Default
	// DefaultBusReadCount.
	ReadCount int
	// BlockTime is how long one read waits for new entries, at least a
	// millisecond. Default DefaultBusBlockTime.
	BlockTime time.Duration
	// NackResendDelay is the pause before a nacked message is delivered
	// again. Default DefaultNackResendDelay.
	NackResendDelay time.Duration
	// ReportGapsAt, when positive, makes a subscription report entries
	// trimmed between its position and what it reads: its first read,
	// and every read that returned at least ReportGapsAt entries (read
	// again), are made in one transaction with XINFO STREAM; when the
	// stream lost entries after the position read from, a message marked
	// pipeline.MetaFeedGap is handed out before the entries read. A read
	// past a trimmed position returns the oldest entries kept, at least
	// as many as the stream's MAXLEN, so ReportGapsAt should be at most
	// the MAXLEN (and ReadCount). A reader whose own position was the
	// newest entry trimmed, exactly, is reported too. Default 0: not
	// checked.
	ReportGapsAt int
	// Pushed says that every writer of the stream also publishes each entry
	// on the shard channel named like the stream followed by
	// ChannelSuffix, in append.lua's push format, which names an ID with
	// nothing stored after it before the entry (the entry before it, or
	// one deleted or lost since). A subscription then listens on that
	// channel (SSUBSCRIBE) instead of blocking reads: it reads the
	// stream (without blocking) once subscribed, whenever a push names as
	// the entry before it one that is not the last it handled (it missed
	// entries: a writer that does not push, or pushes lost), and after
	// BlockTime without a push. A channel that stays silent for BlockTime
	// after a PING ends the subscription, as a failed read does. Default
	// false: blocking reads.
	Pushed bool
	// ChannelSuffix ends the name of the channel of a Pushed subscription
	// (Keys.BusChannel): pub/sub channels are not per database, so the
	// channel of a bus names its database. Default "": the stream's name.
	ChannelSuffix string
	// PrimaryChanges, when set, counts the changes of the primary whose
	// channel a Pushed subscription listens on: a Sentinel client moves
	// its commands to a new primary after a failover, but not its open
	// subscriptions. A subscription that sees the count change subscribes
	// again, within a quarter of BlockTime, on the new primary, and reads
	// the stream after the last entry it handed out; its channel stays
	// open (unless subscribing there fails: that ends it, as any failed
	// read does). Default nil: not watched.
	PrimaryChanges func() uint64
	// Heard, when set, is called by a Pushed subscription with the ID of
	// each entry it learns is in the stream, in the stream's order, as soon
	// as it reads it (before handing the entry out; pushes wait in the
	// connection while an entry is handed out): each push that follows on
	// from its position, and the last entry of each read. It runs in the
	// subscription's goroutine and must return at once. Default nil.
	Heard func(id string)
}

func (c *BusSubscriberConfig) setDefaults() {
	if c.After == "" {
		c.After = DefaultBusAfter
	}
	if c.ReadCount == 0 {
		c.ReadCount = DefaultBusReadCount
	}
	if c.BlockTime == 0 {
		c.BlockTime = DefaultBusBlockTime
	}
	if c.NackResendDelay == 0 {
		c.NackResendDelay = DefaultNackResendDelay
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in.
func (c BusSubscriberConfig) Validate() error {
	switch {
	case !isStreamID(c.After):
		return fmt.Errorf("redisstore: bus subscriber: after %q is not a stream entry ID (known forms: 0-0, 1700000000000-3, 1700000000000)", c.After)
	case c.ReadCount <= 0:
		return errors.New("redisstore: bus subscriber: read count must be positive")
	case c.BlockTime < time.Millisecond:
		// XREAD takes milliseconds, and BLOCK 0 would wait forever.
		return errors.New("redisstore: bus subscriber: block time must be at least 1ms")
	case c.NackResendDelay < 0:
		return errors.New("redisstore: bus subscriber: nack resend delay must not be negative")
	case c.ReportGapsAt < 0:
		return errors.New("redisstore: bus subscriber: report gaps at must not be negative")
	}
	return nil
}

// isStreamID reports whether id is a complete or millisecond-only stream
// entry ID ("1700000000000-3", "1700000000000").
func isStreamID(id string) bool {
	ms, seq, found := strings.Cut(id, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if !found {
		return true
	}
	_, err := strconv.ParseUint(seq, 10, 64)
	return err == nil
}

// ErrSubscriberClosed reports a Subscribe on a closed BusSubscriber.
var ErrSubscriberClosed = errors.New("redisstore: subscriber closed")

// BusSubscriber is a Watermill subscriber of Redis streams in chatstream's
// entry layout (Watermill's: _watermill_message_uuid, payload, msgpack
// metadata), in fan-out mode: every subscription follows the whole stream
// from its own position, no consumer group, by listening for pushes of its
// entries (Pushed) or with XREAD BLOCK. Unlike
// watermill-redisstream's fan-out subscriber, which reads one entry per
// round trip, a subscription reads up to ReadCount entries per round trip.
//
// Each subscription runs one goroutine. With Pushed, it listens for pushes
// of the entries and reads only to catch up (see
// BusSubscriberConfig.Pushed); otherwise it reads a batch, hands its
// messages out one at a time, in stream order, sending the next only once
// the previous is acked (a nacked message is sent again), and then reads
// the next batch. The goroutine that read a message hands it out, so a
// live message reaches its handler with one hand-off between goroutines.
// After a full batch (ReadCount entries: a backlog), the next one is read
// by a goroutine of its own while this one is handed out, so that reading
// a backlog does not wait for a round trip per batch. Every message's
// metadata has MetaSeq set to its entry ID; an entry that cannot be
// decoded becomes a message marked MetaUndecodable instead of ending the
// subscription.
//
// A subscription's channel closes as soon as its context is done or the
// subscriber is closed, and when a read or the pushes' connection fails
// (after handing out what was read before); the caller subscribes again
// after the last entry it handled. A read in progress ends within
// BlockTime after that, its connection back in the client's pool (a
// pushed subscription's receive ends at once). While its read blocks, a
// subscription holds one connection of the client, so the client's pool
// must be larger than the number of subscriptions open at once.
//
// A BusSubscriber is safe for concurrent use. It does not close its client.
type BusSubscriber struct {
	cfg    BusSubscriberConfig
	client redis.UniversalClient
	log    watermill.LoggerAdapter

	// closing is cancelled by Close; it cancels every subscription.
	closing   context.Context
	cancelAll context.CancelFunc
	// mu guards closed and the Adds to running, so that Close waits for
	// every subscription started before it.
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

var _ message.Subscriber = (*BusSubscriber)(nil)

// NewBusSubscriber returns a subscriber reading with client, logging to
// logger (nil: nothing is logged).
func NewBusSubscriber(cfg BusSubscriberConfig, client redis.UniversalClient, logger watermill.LoggerAdapter) (*BusSubscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("redisstore: bus subscriber: client is required")
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	closing, cancelAll := context.WithCancel(context.Background())
	return &BusSubscriber{cfg: cfg, client: client, log: logger, closing: closing, cancelAll: cancelAll}, nil
}

// Subscribe follows the stream named topic from the configured position
// until ctx is done, the subscriber is closed, or a read or the pushes'
// connection fails; then the returned channel is closed.
func (s *BusSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSubscriberClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, cancel)
	out := &outlet{ch: make(chan *message.Message)}
	// The channel closes as soon as ctx is done, while a read may still
	// block for up to BlockTime (and at the latest when the goroutine
	// ends).
	context.AfterFunc(ctx, out.close)
	fields := watermill.LogFields{"stream": topic, "after": s.cfg.After, "pushed": s.cfg.Pushed}
	s.log.Debug("subscribing to bus stream", fields)
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		if s.cfg.Pushed {
			// A subscription left on an old primary listens again, on
			// the new one, after the last entry it handed out: the
			// channel stays open, unless that fails too.
			for after, moved := s.cfg.After, true; moved && ctx.Err() == nil; {
				after, moved = s.listen(ctx, topic, after, out, fields)
			}
		} else {
			s.follow(ctx, topic, out, fields)
		}
		stopOnClose()
		cancel()
		out.close() // before running.Done: Close returns with it closed
	}()
	return out.ch, nil
}

// outlet is a subscription's channel, closed once its context is done;
// nothing is sent on it after that.
type outlet struct {
	mu     sync.Mutex
	closed bool
	ch     chan *message.Message
}

// send hands msg out; it returns false when ctx is done first.
func (o *outlet) send(ctx context.Context, msg *message.Message) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	select {
	case o.ch <- msg:
		return true
	case <-ctx.Done():
		return false
	}
}

func (o *outlet) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.ch)
	}
}

// Close stops every subscription, closes their channels and waits until
// their goroutines have ended (at most BlockTime). Messages handed out and
// not yet acked have their context cancelled. Close is idempotent.
func (s *BusSubscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancelAll()
	s.running.Wait()
	return nil
}

// follow reads batches of entries after the configured position and hands
// their messages out, in order, until ctx is done or a read fails.
func (s *BusSubscriber) follow(ctx context.Context, stream string, out *outlet, fields watermill.LogFields) {
	after := s.cfg.After
	first := true
	var ahead chan readResult // the next batch's read, when one runs
	for ctx.Err() == nil {
		var res readResult
		if ahead != nil {
			res, ahead = <-ahead, nil
		} else {
			res = s.read(ctx, stream, after, first, s.cfg.BlockTime)
		}
		first = false
		if errors.Is(res.err, redis.Nil) {
			continue // nothing new within BlockTime
		}
		if res.err != nil {
			if ctx.Err() == nil {
				// The caller subscribes again (the same message as
				// watermill-redisstream's, which quietCancel
				// reports at debug level).
				s.log.Error("stop reading after error", res.err, fields)
			}
			return
		}
		entries := res.entries
		if len(entries) == 0 {
			continue
		}
		position := after
		after = entries[len(entries)-1].ID
		if len(entries) == s.cfg.ReadCount {
			// A full batch: more is likely waiting, so read it while
			// this one is handed out.
			ahead = make(chan readResult, 1)
			s.running.Add(1)
			go func(after string) {
				defer s.running.Done()
				ahead <- s.read(ctx, stream, after, false, s.cfg.BlockTime)
			}(after)
		}
		if !s.handOut(ctx, res, position, out) {
			return
		}
	}
}

// readResult is one read's entries or error (redis.Nil: none within
// BlockTime), and gap, the oldest entry kept, when entries after the
// position read from were trimmed (see ReportGapsAt).
type readResult struct {
	entries []redis.XMessage
	gap     string
	err     error
}

// read reads up to ReadCount entries of stream after the ID after, waiting
// up to block for one (negative: not waiting). go-redis does not interrupt
// a blocked read when ctx is cancelled: it returns within block. It checks for a gap
// before the entries read when the subscription reports gaps and this is
// its first read or the read took ReportGapsAt entries or more.
func (s *BusSubscriber) read(ctx context.Context, stream, after string, first bool, block time.Duration) readResult {
	n := s.cfg.ReportGapsAt
	if n > 0 && first {
		return s.checkedRead(ctx, stream, after)
	}
	res := s.xread(ctx, stream, after, block)
	if n > 0 && len(res.entries) >= n {
		// A read this full may have passed a trimmed position: read
		// again, together with the stream's state.
		return s.checkedRead(ctx, stream, after)
	}
	return res
}

// checkedRead reads like xread, without waiting, and in the same
// transaction (MULTI) reads the stream's state, so that trimming cannot
// come between the two. It reports a gap when entries after after were
// trimmed: the stream lost entries, after is older than its oldest entry,
// and the read starts at that oldest entry. (Redis 7 does not record which
// entries were trimmed, so an after that is, exactly, the newest trimmed
// entry is reported too.) A stream that does not exist reads as empty.
func (s *BusSubscriber) checkedRead(ctx context.Context, stream, after string) readResult {
	pipe := s.client.TxPipeline()
	info := pipe.XInfoStream(ctx, stream)
	read := pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, after}, Count: int64(s.cfg.ReadCount), Block: -1})
	_, _ = pipe.Exec(ctx) // each reply is checked below: a missing stream is "no such key" and redis.Nil
	xs, err := read.Result()
	if err != nil || len(xs) == 0 {
		if err == nil {
			err = redis.Nil
		}
		return readResult{err: err}
	}
	res := readResult{entries: xs[0].Messages}
	st, err := info.Result()
	switch {
	case err != nil:
		// The entries are there, so the stream is: a failed XINFO is
		// a failed read.
		return readResult{err: err}
	case trimmedAfter(after, st) && res.entries[0].ID == st.FirstEntry.ID:
		res.gap = st.FirstEntry.ID
	}
	return res
}

// gapMessage is the message a subscription hands out for entries trimmed
// after position (the oldest kept being oldest): not an entry, it carries
// pipeline.MetaFeedGap and pipeline.MetaFeedOldest.
func gapMessage(position, oldest string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), nil)
	msg.Metadata.Set(pipeline.MetaFeedGap, position)
	msg.Metadata.Set(pipeline.MetaFeedOldest, oldest)
	return msg
}

// xread reads up to ReadCount entries of stream after the ID after, waiting
// up to block for one (negative: not waiting).
func (s *BusSubscriber) xread(ctx context.Context, stream, after string, block time.Duration) readResult {
	xs, err := s.client.XRead(ctx, &redis.XReadArgs{
		Streams: []string{stream, after},
		Count:   int64(s.cfg.ReadCount),
		Block:   block,
	}).Result()
	if err != nil || len(xs) == 0 {
		return readResult{err: err}
	}
	return readResult{entries: xs[0].Messages}
}

// deliver hands msg out and waits until it is acked, sending it again
// after each nack. It returns false when ctx is done first. The message's
// context is cancelled once it is acked or nacked, or when ctx is done.
func (s *BusSubscriber) deliver(ctx context.Context, msg *message.Message, out *outlet) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		mctx, done := context.WithCancel(ctx)
		msg.SetContext(mctx)
		if !out.send(ctx, msg) {
			done()
			return false
		}
		select {
		case <-msg.Acked():
			done()
			return true
		case <-msg.Nacked():
			done()
		case <-ctx.Done():
			done()
			return false
		}
		msg = msg.Copy() // a message is acked or nacked once
		t := time.NewTimer(s.cfg.NackResendDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}
