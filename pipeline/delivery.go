package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/faillog"
)

// Deliverer receives every stored message of every partition, in seq order
// per partition, and resyncs members whose messages were lost to this
// instance. Its methods must not block; Deliver is called from one goroutine
// per partition.
type Deliverer interface {
	// Deliver hands m to the local members of its room.
	Deliver(m Message)
	// Resync makes every local member of a room for which match is true
	// resume that room from its last seq, and returns how many members
	// were affected.
	Resync(match func(room string) bool) int
}

// InstanceInfo describes one running instance in the backend's records.
type InstanceInfo struct {
	ID, Addr  string
	StartedAt time.Time
	// Version is the build the instance runs (version.Info.Short), so a
	// rolling upgrade shows which instance runs what.
	Version string
	// Positions is the last delivered bus seq per partition ("" none yet).
	Positions []string
}

// InstanceRecorder keeps the records of running instances. Implementations
// are safe for concurrent use.
type InstanceRecorder interface {
	// RecordInstance writes info; a record expires unless written again
	// within the backend's instance TTL.
	RecordInstance(ctx context.Context, info InstanceInfo) error
}

// Defaults of DeliveryConfig.
const (
	// DefaultResubscribeDelay is the default pause before a failed feed
	// subscription is opened again.
	DefaultResubscribeDelay = 500 * time.Millisecond
	// DefaultReportEvery is the default interval of instance records and
	// feed gap checks.
	DefaultReportEvery = 5 * time.Second
)

// DeliveryConfig configures a Delivery. A zero field takes the default given
// in its comment.
type DeliveryConfig struct {
	// Feed delivers stored messages. Required.
	Feed Feed
	// Deliverer receives them. Required.
	Deliverer Deliverer
	// Logger logs delivery events. Default slog.Default().
	Logger *slog.Logger
	// ResubscribeDelay is the pause before a failed feed subscription is
	// opened again. Default DefaultResubscribeDelay.
	ResubscribeDelay time.Duration
	// Instance names this instance in the records (ID, Addr, StartedAt);
	// Positions are filled in by the Delivery.
	Instance InstanceInfo
	// Instances records this instance and its read positions every
	// ReportEvery. Nil: not recorded.
	Instances InstanceRecorder
	// Buses tells what each partition's feed holds; every ReportEvery the
	// delivery compares it with its position: a feed that was reset (a new
	// epoch, or its newest entry below the position: Redis restarted
	// empty) is followed again from its new start, and a feed trimmed past
	// the position lost entries; either way the members of that
	// partition's rooms resync. Nil: not checked.
	Buses BusStater
	// ReportEvery is the interval of records and gap checks. Default
	// DefaultReportEvery.
	ReportEvery time.Duration
	// Observer is told of failed backend operations. Nil: nobody.
	Observer Observer
}

func (c *DeliveryConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ResubscribeDelay == 0 {
		c.ResubscribeDelay = DefaultResubscribeDelay
	}
	if c.ReportEvery == 0 {
		c.ReportEvery = DefaultReportEvery
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in (zero limits are
// refused here, while the constructor fills them in first).
func (c DeliveryConfig) Validate() error {
	switch {
	case c.Feed == nil:
		return errors.New("pipeline: feed is required")
	case c.Deliverer == nil:
		return errors.New("pipeline: deliverer is required")
	case c.ResubscribeDelay <= 0, c.ReportEvery <= 0:
		return errors.New("pipeline: delivery intervals must be positive")
	}
	return nil
}

// Delivery follows every partition of the feed and hands stored messages to
// the Deliverer; it also records this instance's read positions and resyncs
// members when a partition was trimmed past them. Create it with
// NewDelivery and start it with Run.
type Delivery struct {
	cfg DeliveryConfig
	log *slog.Logger
	// ready is closed once every partition's feed is subscribed, so a
	// message stored after it cannot miss its delivery here.
	ready      chan struct{}
	subscribed sync.WaitGroup
	started    atomic.Bool

	delivered, undecodable atomic.Int64

	// posMu guards positions: the seq of the last message delivered per
	// partition ("" before the first).
	posMu     sync.Mutex
	positions []string

	// gapMu guards gapHandled: the position per partition at which a
	// feed gap was last handled. epochs is the feed epoch per partition
	// last seen, owned by the watch goroutine.
	gapMu      sync.Mutex
	gapHandled map[int]string
	epochs     []string
	// restart tells partition loops to follow their feed again from a seq
	// (after a reset); one slot each, a newer request replaces an older.
	restart []chan string
	// subFail reports failing subscriptions once, not per retry.
	subFail *faillog.Log
}

// NewDelivery builds a delivery from cfg.
func NewDelivery(cfg DeliveryConfig) (*Delivery, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.Feed.Partitions()
	d := &Delivery{
		cfg: cfg, log: cfg.Logger, ready: make(chan struct{}),
		positions:  make([]string, n),
		gapHandled: make(map[int]string),
		epochs:     make([]string, n),
		restart:    make([]chan string, n),
		subFail:    faillog.New(cfg.Logger, "feed subscription", 0),
	}
	for p := range d.restart {
		d.restart[p] = make(chan string, 1)
	}
	return d, nil
}

// Run follows every partition, and records and checks positions, until ctx
// is done.
func (d *Delivery) Run(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	var wg sync.WaitGroup
	d.subscribed.Add(d.cfg.Feed.Partitions())
	for part := range d.cfg.Feed.Partitions() {
		wg.Go(func() { d.loop(ctx, part) })
	}
	wg.Go(func() {
		d.subscribed.Wait()
		if ctx.Err() == nil {
			close(d.ready)
		}
	})
	if d.cfg.Instances != nil || d.cfg.Buses != nil {
		wg.Go(func() { d.watch(ctx) })
	}
	wg.Wait()
	return nil
}

// Running is closed once every partition is subscribed.
func (d *Delivery) Running() <-chan struct{} { return d.ready }

// Positions returns, per partition, the seq of the last message delivered
// ("" before the first): how far this instance has read each bus.
func (d *Delivery) Positions() []string {
	d.posMu.Lock()
	defer d.posMu.Unlock()
	return append([]string(nil), d.positions...)
}

// loop subscribes to one partition of the feed and hands every stored
// message to the Deliverer. When the subscription ends before ctx is done it
// subscribes again after the last seq it delivered, so nothing is skipped;
// a restart request (after a reset of the feed) makes it subscribe again
// after the seq it names instead.
func (d *Delivery) loop(ctx context.Context, part int) {
	last := ""
	first := true
	defer func() {
		if first { // never subscribed: do not hold Run's readiness wait
			d.subscribed.Done()
		}
	}()
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		err := d.resolveStart(sctx, part, &last)
		var ch <-chan *message.Message
		if err == nil {
			ch, err = d.cfg.Feed.Subscribe(sctx, part, last)
		}
		if err != nil {
			if ctx.Err() == nil {
				d.subFail.Fail(strconv.Itoa(part), err)
				observeError(d.cfg.Observer, OpSubscribe)
			}
		} else {
			if first {
				first = false
				d.subscribed.Done()
			}
			if from, restarted := d.follow(ch, part, &last); restarted {
				cancel()
				for range ch { // the cancelled subscription closes its channel
				}
				last = from
				d.setPosition(part, "")
				continue // at once: messages stored since the reset wait
			}
			if ctx.Err() == nil { // it ended by itself: a read failed
				observeError(d.cfg.Observer, OpFeedRead)
				d.subFail.Fail(strconv.Itoa(part), errFeedEnded)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case from := <-d.restart[part]:
			last = from
			d.setPosition(part, "")
		case <-time.After(d.cfg.ResubscribeDelay):
		}
	}
}

// resolveStart turns a start "from now on" ("") into the partition's
// newest seq, once: a subscription that ends before it delivered anything
// then resumes from there, not from a later "now" that would skip what
// was stored in between. Without Buses the feed resolves it.
func (d *Delivery) resolveStart(ctx context.Context, part int, last *string) error {
	if *last != "" || d.cfg.Buses == nil {
		return nil
	}
	st, err := d.cfg.Buses.BusState(ctx, part)
	if err != nil {
		return fmt.Errorf("pipeline: partition %d: %w", part, err)
	}
	*last = st.Last
	if *last == "" {
		*last = "0-0" // nothing stored yet: everything is new
	}
	return nil
}

// errFeedEnded is the failure of a feed subscription that ended by
// itself; the backend logs why at debug level.
var errFeedEnded = errors.New("the subscription ended: a read failed")

// follow delivers the messages of one subscription until its channel
// closes, keeping *last at the seq delivered, or until a restart is
// requested: then it returns the seq to follow from and true. A
// subscription that stays open for ReportEvery works: it ends a failure of
// the partition's subscriptions. (Messages handed out before a failure do
// not: reads failing every few seconds are one failure, not one each.)
func (d *Delivery) follow(ch <-chan *message.Message, part int, last *string) (string, bool) {
	steady := time.NewTimer(d.cfg.ReportEvery)
	defer steady.Stop()
	for {
		select {
		case <-steady.C:
			d.subFail.OK(strconv.Itoa(part))
		case msg, ok := <-ch:
			if !ok {
				return "", false
			}
			if pos := msg.Metadata.Get(MetaFeedGap); pos != "" {
				d.gap(part, pos, "", msg.Metadata.Get(MetaFeedOldest))
				msg.Ack()
				continue
			}
			if seq := d.deliver(msg); seq != "" {
				*last = seq
				d.setPosition(part, seq)
			}
			msg.Ack()
		case from := <-d.restart[part]:
			return from, true
		}
	}
}

func (d *Delivery) setPosition(part int, seq string) {
	d.posMu.Lock()
	d.positions[part] = seq
	d.posMu.Unlock()
}

// deliver hands one feed entry to the Deliverer and returns its seq. An
// entry it cannot decode is logged, counted and skipped; its seq, when
// the feed set one, is returned all the same.
func (d *Delivery) deliver(msg *message.Message) string {
	m, err := FromWatermill(msg)
	if err != nil {
		d.undecodable.Add(1)
		d.log.Warn("skipping undecodable entry", "msg_id", msg.UUID, "seq", msg.Metadata.Get(MetaSeq), "err", err)
		// Skipped but read: a resubscription starts after it.
		return msg.Metadata.Get(MetaSeq)
	}
	d.delivered.Add(1)
	d.cfg.Deliverer.Deliver(m)
	return m.Seq
}

// watch records the instance and checks for feed gaps every ReportEvery
// until ctx is done.
func (d *Delivery) watch(ctx context.Context) {
	tick := time.NewTicker(d.cfg.ReportEvery)
	defer tick.Stop()
	for {
		positions := d.Positions()
		if d.cfg.Instances != nil {
			d.record(ctx, positions)
		}
		if d.cfg.Buses != nil {
			d.checkGaps(ctx, positions)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *Delivery) record(ctx context.Context, positions []string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReportEvery)
	defer cancel()
	info := d.cfg.Instance
	info.Positions = positions
	if err := d.cfg.Instances.RecordInstance(ctx, info); err != nil && ctx.Err() == nil {
		observeError(d.cfg.Observer, OpInstanceRecord)
		d.log.Debug("instance record failed", "err", err)
	}
}

// MetaFeedGap marks a message of a feed subscription that is not an entry
// but the report that entries after the position it holds (the seq last
// read) were trimmed before they were read. A Delivery resyncs the
// members of that partition's rooms, once per position, and goes on with
// the entries that follow.
const MetaFeedGap = "_chatstream_feed_gap"

// MetaFeedOldest is set, on a MetaFeedGap message, to the oldest entry the
// feed kept.
const MetaFeedOldest = "_chatstream_feed_oldest"

// checkGaps compares, for each partition, what the feed holds with how far
// this instance has read it. A feed that was reset (another epoch than
// last seen, or nothing at or after the position: Redis restarted empty,
// perhaps with its clock behind) is followed again from its new start. An
// entry newer than the position removed by trimming is an entry this
// instance never delivered. Either way the members of that
// partition's rooms resync, so their clients resume from the room streams
// (and learn of a reset there). A gap is an entry after the position that
// trimming removed (BusState.Trimmed). Each reset or gap is handled once.
func (d *Delivery) checkGaps(ctx context.Context, positions []string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReportEvery)
	defer cancel()
	for p, pos := range positions {
		st, err := d.cfg.Buses.BusState(ctx, p)
		if err != nil {
			if ctx.Err() == nil {
				observeError(d.cfg.Observer, OpBusState)
			}
			continue // an outage is reported by the subscriptions
		}
		known := d.epochs[p]
		d.epochs[p] = st.Epoch
		reset := known != "" && st.Epoch != known ||
			pos != "" && (st.Last == "" || CompareSeq(st.Last, pos) < 0)
		switch {
		case reset:
			// Within one epoch the feed lost only its newest entries (a
			// failover lost writes): what it kept was delivered, so it is
			// followed again after its newest entry. A new epoch is all
			// new. A gap reported at the restart position is this reset,
			// already handled by the resync below.
			from := "0-0"
			if st.Epoch == known && st.Last != "" {
				from = st.Last
			}
			d.requestRestart(p, from)
			d.gapMu.Lock()
			d.gapHandled[p] = from
			d.gapMu.Unlock()
			n := d.cfg.Deliverer.Resync(func(room string) bool { return PartitionOf(room, len(positions)) == p })
			d.log.Error("feed reset: the partition's stored data was lost; following it from its new start, members resync",
				"partition", p, "position", pos, "epoch", st.Epoch, "previous_epoch", known, "last", st.Last, "resynced", n)
		case pos != "" && lostAfter(st, pos):
			d.gap(p, pos, st.Trimmed, st.Oldest)
		}
	}
}

// gap resyncs the members of partition p's rooms, once per position,
// because the feed lost entries after pos, the position read, before this
// instance read them: by trimming (trimmed, the newest entry removed, if
// known; oldest, the oldest kept).
func (d *Delivery) gap(p int, pos, trimmed, oldest string) {
	d.gapMu.Lock()
	handled := d.gapHandled[p] == pos
	d.gapHandled[p] = pos
	d.gapMu.Unlock()
	if handled {
		return
	}
	parts := len(d.restart)
	n := d.cfg.Deliverer.Resync(func(room string) bool { return PartitionOf(room, parts) == p })
	d.log.Error("delivery gap: the partition bus was trimmed past this instance's position; members resume",
		"partition", p, "position", pos, "trimmed", trimmed, "oldest", oldest, "resynced", n)
}

// lostAfter reports whether the feed lost an entry after pos to trimming:
// the newest entry removed is after pos, or, where the feed does not know
// it (Redis records only XDEL, not trimming), pos is older than the oldest
// entry kept (which resyncs needlessly only when pos is exactly the newest
// entry trimmed).
func lostAfter(st BusState, pos string) bool {
	if st.Trimmed != "" {
		return CompareSeq(st.Trimmed, pos) > 0
	}
	return st.Oldest != "" && CompareSeq(pos, st.Oldest) < 0
}

// requestRestart asks partition p's loop to follow the feed again after
// seq, replacing a request it has not taken yet.
func (d *Delivery) requestRestart(p int, seq string) {
	for {
		select {
		case d.restart[p] <- seq:
			return
		default:
		}
		select {
		case <-d.restart[p]:
		default:
		}
	}
}
