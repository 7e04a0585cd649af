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

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
)

// Submission is a send accepted from a client, before the pipeline has seen it.
type Submission struct {
	// ConnID identifies the sender's connection; outcomes are addressed to it.
	ConnID string
	// User is the sender's name.
	User string
	// Room is the target room.
	Room string
	// Text is the message text.
	Text string
	// Ref is the client's reference, echoed in the ack or error.
	Ref string
	// CorrelationID ties log lines together; generated when empty.
	CorrelationID string
	// Meta holds extra metadata stored with the message (e.g. replayed_from).
	Meta map[string]string
}

// Outcome is the result of one submission, addressed to its sender.
type Outcome struct {
	ConnID, Ref, Room string
	// ID and Seq are set when the message was stored.
	ID, Seq string
	// Err is set when the message was refused or could not be stored.
	Err *Error
}

// Replier receives the outcome of every submission. Reply must not block; it
// is called from pipeline goroutines.
type Replier interface {
	Reply(o Outcome)
}

// Deliverer receives every stored message of every partition, in seq order
// per partition. Deliver must not block; it is called from one goroutine per
// partition.
type Deliverer interface {
	Deliver(m Message)
}

// Moderator is a named middleware at the plugin point of the chain. It
// returns an *Error with CodeRejected (or CodeRateLimited) to refuse a message.
type Moderator struct {
	Name       string
	Middleware message.HandlerMiddleware
}

// Config configures a Pipeline. A zero field takes the default given in its
// comment.
type Config struct {
	// Backend stores, delivers and dead-letters messages. Required.
	Backend Backend
	// Replier receives outcomes. Required.
	Replier Replier
	// Deliverer receives stored messages. Required.
	Deliverer Deliverer
	// Logger logs pipeline events. Default slog.Default().
	Logger *slog.Logger
	// MaxTextBytes limits a message's text. Default 4096.
	MaxTextBytes int
	// Moderators run, in order, after validation and before the store.
	Moderators []Moderator
	// Shards is the number of ingress topics; messages of one room always
	// take the same shard, so a room's messages are stored in arrival order
	// while different rooms proceed in parallel. Default 16.
	Shards int
	// StoreTimeout bounds one Append. Default 5s.
	StoreTimeout time.Duration
	// ResubscribeDelay is the pause before a failed feed subscription is
	// opened again. Default 500ms.
	ResubscribeDelay time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxTextBytes == 0 {
		c.MaxTextBytes = DefaultMaxTextBytes
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.ResubscribeDelay == 0 {
		c.ResubscribeDelay = 500 * time.Millisecond
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.Backend == nil:
		return errors.New("pipeline: backend is required")
	case c.Replier == nil:
		return errors.New("pipeline: replier is required")
	case c.Deliverer == nil:
		return errors.New("pipeline: deliverer is required")
	case c.MaxTextBytes < 0, c.Shards < 0, c.StoreTimeout < 0, c.ResubscribeDelay < 0:
		return errors.New("pipeline: limits must not be negative")
	}
	for _, m := range c.Moderators {
		if m.Name == "" || m.Middleware == nil {
			return errors.New("pipeline: moderator without name or middleware")
		}
	}
	return nil
}

// Stats are counters of a running pipeline.
type Stats struct {
	Stored, Refused, Delivered, Undecodable int64
}

// Pipeline runs submissions through the Watermill router into the backend and
// delivers stored messages. Create it with New and start it with Run.
type Pipeline struct {
	cfg     Config
	log     *slog.Logger
	ingress *gochannel.GoChannel
	router  *message.Router
	// ready is closed once the router runs and every partition's feed is
	// subscribed, so a stored message cannot miss its delivery.
	ready      chan struct{}
	subscribed sync.WaitGroup

	stored, refused, delivered, undecodable atomic.Int64

	// posMu guards positions: the seq of the last message delivered per
	// partition ("" before the first).
	posMu     sync.Mutex
	positions []string
}

// New builds a pipeline from cfg.
func New(cfg Config) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	wlog := watermill.NewSlogLoggerWithLevelMapping(cfg.Logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug, // watermill's info lines are per-handler chatter
	})
	p := &Pipeline{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	// BlockPublishUntilSubscriberAck makes Submit return only after the
	// message was handled, which keeps each shard in order and pushes back on
	// fast senders instead of queueing without bound.
	p.ingress = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, wlog)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("pipeline: router: %w", err)
	}
	router.AddMiddleware(
		p.settle,
		middleware.Recoverer,
		ensureCorrelationID,
		middleware.CorrelationID,
		Logging(cfg.Logger),
		SizeLimit(cfg.MaxTextBytes),
		Validate,
	)
	for _, m := range cfg.Moderators {
		router.AddMiddleware(named(m))
	}
	for i := range cfg.Shards {
		topic := ingressTopic(i)
		router.AddConsumerHandler(topic, topic, p.ingress, p.store)
	}
	p.router = router
	p.positions = make([]string, cfg.Backend.Partitions())
	return p, nil
}

func ingressTopic(i int) string { return "ingress." + strconv.Itoa(i) }

// Run runs the router and one delivery loop per partition until ctx is done.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	p.subscribed.Add(p.cfg.Backend.Partitions())
	for part := range p.cfg.Backend.Partitions() {
		wg.Go(func() { p.deliverLoop(ctx, part) })
	}
	wg.Go(func() {
		select {
		case <-p.router.Running():
		case <-ctx.Done():
			return
		}
		p.subscribed.Wait()
		close(p.ready)
	})
	err := p.router.Run(ctx)
	wg.Wait()
	_ = p.ingress.Close() // only fails when already closed
	if err != nil {
		return fmt.Errorf("pipeline: router: %w", err)
	}
	return nil
}

// Running is closed once the pipeline accepts submissions and delivers.
func (p *Pipeline) Running() <-chan struct{} { return p.ready }

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	return Stats{
		Stored: p.stored.Load(), Refused: p.refused.Load(),
		Delivered: p.delivered.Load(), Undecodable: p.undecodable.Load(),
	}
}

// Positions returns, per partition, the seq of the last message delivered
// ("" before the first): how far this instance has read each bus.
func (p *Pipeline) Positions() []string {
	p.posMu.Lock()
	defer p.posMu.Unlock()
	return append([]string(nil), p.positions...)
}

// ErrClosed reports a submission to a pipeline that is not running.
var ErrClosed = errors.New("pipeline closed")

// Submit runs s through the pipeline and returns once it was handled: its
// outcome has been given to the Replier. It returns an error only when the
// message could not enter the pipeline (ctx done, pipeline closed, or not
// ready within StoreTimeout: ErrUnavailable); then no outcome is sent.
func (p *Pipeline) Submit(ctx context.Context, s Submission) error {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(p.cfg.StoreTimeout):
		// Not ready yet (e.g. the backend was down at start): refuse
		// rather than hold the sender's connection.
		return fmt.Errorf("%w: not ready", ErrUnavailable)
	}
	if p.router.IsClosed() {
		return ErrClosed
	}
	msg := message.NewMessage(uuid.Must(uuid.NewV7()).String(), []byte(s.Text))
	for k, v := range s.Meta {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(MetaRoom, s.Room)
	msg.Metadata.Set(MetaUser, s.User)
	msg.Metadata.Set(MetaConnID, s.ConnID)
	if s.Ref != "" {
		msg.Metadata.Set(MetaRef, s.Ref)
	}
	msg.Metadata.Set(MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	if s.CorrelationID != "" {
		middleware.SetCorrelationID(s.CorrelationID, msg)
	}
	topic := ingressTopic(PartitionOf(s.Room, p.cfg.Shards))
	if err := p.ingress.Publish(topic, msg); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return nil
}

// store is the last handler of the chain: it appends the message to the
// backend and acknowledges it to its sender.
func (p *Pipeline) store(msg *message.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.StoreTimeout)
	defer cancel()
	seq, err := p.cfg.Backend.Append(ctx, msg)
	if err != nil {
		p.log.Warn("store failed", "msg_id", msg.UUID, "room", msg.Metadata.Get(MetaRoom), "err", err)
		return &Error{Code: CodeUnavailable, Reason: "the message could not be stored; try again"}
	}
	p.stored.Add(1)
	p.cfg.Replier.Reply(Outcome{
		ConnID: msg.Metadata.Get(MetaConnID), Ref: msg.Metadata.Get(MetaRef),
		Room: msg.Metadata.Get(MetaRoom), ID: msg.UUID, Seq: seq,
	})
	return nil
}

// settle is the outermost middleware: it turns every error of the chain into
// an error outcome for the sender, dead-letters rejected messages, and acks
// the message, so nothing is retried forever.
func (p *Pipeline) settle(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		_, err := h(msg)
		if err == nil {
			return nil, nil
		}
		var perr *Error
		if !errors.As(err, &perr) {
			p.log.Error("pipeline failed", "msg_id", msg.UUID, "err", err)
			perr = &Error{Code: CodeInternal, Reason: "internal error"}
		}
		p.refused.Add(1)
		if perr.Code == CodeRejected {
			p.deadLetter(msg, perr)
		}
		p.cfg.Replier.Reply(Outcome{
			ConnID: msg.Metadata.Get(MetaConnID), Ref: msg.Metadata.Get(MetaRef),
			Room: msg.Metadata.Get(MetaRoom), ID: msg.UUID, Err: perr,
		})
		return nil, nil
	}
}

func (p *Pipeline) deadLetter(msg *message.Message, perr *Error) {
	dl := msg.Copy()
	dl.Metadata.Set(MetaReason, perr.Reason)
	dl.Metadata.Set(MetaCode, perr.Code)
	dl.Metadata.Set(MetaModerator, perr.Moderator)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.StoreTimeout)
	defer cancel()
	if err := p.cfg.Backend.DeadLetter(ctx, dl); err != nil {
		p.log.Warn("dead letter failed", "msg_id", msg.UUID, "err", err)
	}
}

// named stamps the moderator's name on the errors it returns.
func named(m Moderator) message.HandlerMiddleware {
	inner := m.Middleware
	return func(h message.HandlerFunc) message.HandlerFunc {
		wrapped := inner(h)
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := wrapped(msg)
			var perr *Error
			if errors.As(err, &perr) && perr.Moderator == "" && perr.Code != CodeUnavailable {
				// A copy: moderators may return one shared error value.
				named := *perr
				named.Moderator = m.Name
				return out, &named
			}
			return out, err
		}
	}
}

// deliverLoop subscribes to one partition of the feed and hands every stored
// message to the Deliverer. When the subscription ends before ctx is done it
// subscribes again after the last seq it delivered, so nothing is skipped.
func (p *Pipeline) deliverLoop(ctx context.Context, part int) {
	last := ""
	first := true
	defer func() {
		if first { // never subscribed: do not hold Run's readiness wait
			p.subscribed.Done()
		}
	}()
	for ctx.Err() == nil {
		ch, err := p.cfg.Backend.Subscribe(ctx, part, last)
		if err != nil {
			p.log.Warn("feed subscribe failed", "partition", part, "err", err)
		} else {
			if first {
				first = false
				p.subscribed.Done()
			}
			for msg := range ch {
				if seq := p.deliver(msg); seq != "" {
					last = seq
					p.posMu.Lock()
					p.positions[part] = seq
					p.posMu.Unlock()
				}
				msg.Ack()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(p.cfg.ResubscribeDelay):
		}
	}
}

// deliver is the feed's subscriber handler. It returns the seq delivered, or
// "" for an entry it could not decode (logged, counted and skipped).
func (p *Pipeline) deliver(msg *message.Message) string {
	m, err := FromWatermill(msg)
	if err != nil {
		p.undecodable.Add(1)
		p.log.Warn("skipping undecodable entry", "msg_id", msg.UUID, "err", err)
		return ""
	}
	p.delivered.Add(1)
	p.cfg.Deliverer.Deliver(m)
	return m.Seq
}
