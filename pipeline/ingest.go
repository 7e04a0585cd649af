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
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/chatstream/chatstream/internal/faillog"
)

// Submission is a send accepted from a client, before the pipeline has seen it.
type Submission struct {
	// ConnID identifies the sender's connection; it is stored as MetaConnID.
	ConnID string
	// User is the sender's name.
	User string
	// Room is the target room.
	Room string
	// Text is the message text.
	Text string
	// Ref is the client's reference, echoed in the ack or error.
	Ref string
	// CorrelationID ties log lines together; the message's own id when
	// empty.
	CorrelationID string
	// Meta holds extra metadata stored with the message (e.g. replayed_from).
	Meta map[string]string
}

// Outcome is the result of one submission, returned to its submitter.
type Outcome struct {
	Ref, Room string
	// ID is the message's id (UUID v7); set whether it was stored or not,
	// except for a send refused before it entered the pipeline because
	// the store's queue was full (Saturation).
	// For a duplicate it is the id of the message stored the first time.
	ID string
	// Seq is set when the message was stored (the original's for a
	// duplicate).
	Seq string
	// Epoch is the room's epoch when the message was stored.
	Epoch string
	// Duplicate reports a send already stored under the same user, room and
	// ref within the backend's idempotency window: nothing was stored or
	// delivered again, and ID and Seq are the original's.
	Duplicate bool
	// Err is set when the message was refused or could not be stored.
	Err *Error
}

// Moderator is a named middleware at the plugin point of the chain. It
// returns an *Error with CodeRejected (or CodeRateLimited) to refuse a message.
type Moderator struct {
	Name       string
	Middleware message.HandlerMiddleware
}

// Defaults of IngestConfig, also used by the command line's flags.
const (
	// DefaultShards is the default number of ingress shards.
	DefaultShards = 16
	// DefaultStoreTimeout is the default bound of one Append.
	DefaultStoreTimeout = 5 * time.Second
	// DefaultShardWait is the default bound of a send's wait for its
	// shard.
	DefaultShardWait = 500 * time.Millisecond
)

// IngestConfig configures an Ingest. A zero field takes the default given in
// its comment.
type IngestConfig struct {
	// Store stores accepted messages. Required.
	Store Store
	// DeadLetters records rejected messages. Required.
	DeadLetters DeadLetters
	// Logger logs pipeline events. Default slog.Default().
	Logger *slog.Logger
	// MaxTextBytes limits a message's text. Default DefaultMaxTextBytes.
	MaxTextBytes int
	// Moderators run, in order, after validation and before the store.
	Moderators []Moderator
	// Shards is the number of ingress topics; messages of one room always
	// take the same shard, so a room's messages are stored in arrival order
	// while different rooms proceed in parallel. Default DefaultShards.
	Shards int
	// StoreTimeout bounds one Append, and how long Submit waits for the
	// ingest to become ready. Default DefaultStoreTimeout.
	StoreTimeout time.Duration
	// ShardWait bounds how long a send waits for its shard while the
	// chain runs other messages of the shard's rooms (a slow moderator
	// holds it). A send is refused at once, unavailable with a retry
	// hint, when the message in the chain has held the shard for longer,
	// and without running the chain when it waited longer. Default
	// DefaultShardWait.
	ShardWait time.Duration
	// Gate, when set, holds submissions until it is closed. An instance
	// passes its Delivery's Running, so that nothing is stored before this
	// instance can deliver it. Nil: no gate (a publisher-only process).
	Gate <-chan struct{}
	// Observer is told how long appends take and which fail. Nil: nobody.
	Observer Observer
	// Instrument, when set, is a middleware placed just below the
	// outermost (which answers the submitter), so it sees every refusal
	// as a failed handler (Watermill's handler metrics). Nil: nothing.
	Instrument message.HandlerMiddleware
}

func (c *IngestConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxTextBytes == 0 {
		c.MaxTextBytes = DefaultMaxTextBytes
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
	if c.ShardWait == 0 {
		c.ShardWait = DefaultShardWait
	}
	if c.Gate == nil {
		open := make(chan struct{})
		close(open)
		c.Gate = open
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in (zero limits are
// refused here, while the constructor fills them in first).
func (c IngestConfig) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("pipeline: store is required")
	case c.DeadLetters == nil:
		return errors.New("pipeline: dead letters are required")
	case c.MaxTextBytes <= 0, c.Shards <= 0, c.StoreTimeout <= 0, c.ShardWait <= 0:
		return errors.New("pipeline: limits must be positive")
	}
	for _, m := range c.Moderators {
		if m.Name == "" || m.Middleware == nil {
			return errors.New("pipeline: moderator without name or middleware")
		}
	}
	return nil
}

// Ingest runs each submission through the chain of Watermill middleware
// into the store and returns its outcome to its submitter. It subscribes to
// no feed. Create it with NewIngest and start it with Run.
//
// The chain runs in the submitter's goroutine, one message of a shard at a
// time: nothing hands a message from goroutine to goroutine on its way to
// the store. (A router with a channel per shard did, and under a CPU
// shortage every hand-off waited its turn behind every other runnable
// goroutine, so the ingest stored less the more it was offered.)
type Ingest struct {
	cfg IngestConfig
	log *slog.Logger
	// handler is the chain: settle, the instrument, the middleware and
	// moderators, then store.
	handler message.HandlerFunc
	// sat is the store's Saturation, when it has one.
	sat Saturation
	// ready is closed once Run runs and the gate is open.
	ready   chan struct{}
	started atomic.Bool
	// closeMu guards closed; a chain in progress holds it for reading,
	// so Run returns only once none is. closing is set first, so that
	// submissions still waiting for their shard give up rather than run
	// their chains one after another while Run waits.
	closeMu sync.RWMutex
	closed  bool
	closing atomic.Bool
	// storeFail reports failing appends once, not per message; deadFail
	// the same for dead letters.
	storeFail, deadFail *faillog.Log
	// chainFail reports unexpected middleware failures once while they
	// last; a stored message ends them.
	chainFail *faillog.Log

	stored, refused, overloaded, shardBusy atomic.Int64

	// shards serialise the chain per shard: a room's messages pass it one
	// at a time, in the order they were begun.
	shards []ingressShard
	// busyFail reports sends refused for a shard held too long, once
	// while it lasts; busyErr is their answer, with a hint to retry once
	// ShardWait has passed.
	busyFail *faillog.Log
	busyErr  *Error
	// born is when the ingest was made: the shards' clock counts from it,
	// on the monotonic clock, so that a step of the wall clock cannot
	// make a shard look held for long.
	born time.Time
}

// ingressShard serialises the chain for the rooms of one shard.
type ingressShard struct {
	mu sync.Mutex
	// since is when the message in the chain took mu (Ingest.clock), 0
	// while mu is free.
	since atomic.Int64
}

// NewIngest builds an ingest from cfg.
func NewIngest(cfg IngestConfig) (*Ingest, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	in := &Ingest{
		cfg: cfg, log: cfg.Logger, ready: make(chan struct{}),
		storeFail: faillog.New(cfg.Logger, "backend writes", 0), deadFail: faillog.New(cfg.Logger, "dead letters", 0),
		chainFail: faillog.New(cfg.Logger, "message chain", 0),
		busyFail:  faillog.New(cfg.Logger, "ingress shards", 0),
		shards:    make([]ingressShard, cfg.Shards),
		born:      time.Now(),
		busyErr: &Error{Code: CodeUnavailable, RetryAfter: cfg.ShardWait,
			Reason: "the server is busy with other messages of this room's shard; retry with the same ref"},
	}
	// The first is the outermost, as a Watermill router adds them.
	chain := []message.HandlerMiddleware{in.settle}
	if cfg.Instrument != nil {
		chain = append(chain, cfg.Instrument)
	}
	chain = append(chain,
		middleware.Recoverer,
		ensureCorrelationID,
		middleware.CorrelationID,
		Logging(cfg.Logger),
		SizeLimit(cfg.MaxTextBytes),
		Validate,
	)
	for _, m := range cfg.Moderators {
		chain = append(chain, named(m))
	}
	h := message.HandlerFunc(func(msg *message.Message) ([]*message.Message, error) { return nil, in.store(msg) })
	for i := len(chain) - 1; i >= 0; i-- {
		h = chain[i](h)
	}
	in.handler = h
	in.sat, _ = cfg.Store.(Saturation)
	return in, nil
}

// ErrRunTwice reports a second Run of an Ingest, Delivery or Pipeline.
var ErrRunTwice = errors.New("pipeline: already run")

// Run accepts submissions, once the gate is open, until ctx is done; then
// it refuses new ones and returns once the chains in progress have
// finished (their appends complete on their own). It can be called once.
func (in *Ingest) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	select {
	case <-in.cfg.Gate:
		close(in.ready)
	case <-ctx.Done():
	}
	<-ctx.Done()
	in.closing.Store(true)
	in.closeMu.Lock()
	in.closed = true
	in.closeMu.Unlock()
	return nil
}

// Stats returns the ingest's counters (Stored, Refused, Overloaded,
// ShardBusy).
func (in *Ingest) Stats() Stats {
	return Stats{Stored: in.stored.Load(), Refused: in.refused.Load(), Overloaded: in.overloaded.Load(),
		ShardBusy: in.shardBusy.Load()}
}

// Running is closed once the ingest accepts submissions.
func (in *Ingest) Running() <-chan struct{} { return in.ready }

// ErrClosed reports a submission to a pipeline that is not running.
var ErrClosed = errors.New("pipeline closed")

// outcomeKey is the context key of a submission's outcome slot.
type outcomeKey struct{}

// outcomeSlot carries one submission's outcome from the chain, or from the
// store's completion, to its submitter.
type outcomeSlot struct {
	// storing is set once the message was queued for the store, whose
	// completion answers.
	storing atomic.Bool
	// done receives the one outcome; it has room for it.
	done chan Outcome
	// dead is the dead letter of a rejected message, set by the chain
	// and written by Begin once the shard is free.
	dead *message.Message
}

func slotOf(msg *message.Message) *outcomeSlot {
	slot, _ := msg.Context().Value(outcomeKey{}).(*outcomeSlot)
	return slot
}

func (in *Ingest) reply(msg *message.Message, o Outcome) {
	if slot := slotOf(msg); slot != nil {
		select {
		case slot.done <- o:
		default: // already answered: the first outcome stands
		}
	}
}

// Submit runs s through the pipeline and returns its outcome: the stored
// message's id and seq, or the refusal (Outcome.Err). It returns an error
// only when the message could not enter the pipeline (ctx done, pipeline
// closed, or not ready within StoreTimeout: ErrUnavailable).
func (in *Ingest) Submit(ctx context.Context, s Submission) (Outcome, error) {
	p, err := in.Begin(ctx, s)
	if err != nil {
		return Outcome{}, err
	}
	return p.Wait(ctx)
}

// Pending is a submission that entered the pipeline: it has passed the
// chain and is queued for the store (or was refused). Wait returns its
// outcome.
type Pending struct {
	in  *Ingest
	s   Submission
	msg *message.Message
	// slot is the message's outcome slot, in Pending so that both are
	// one allocation.
	slot outcomeSlot
	// o is the outcome when it was known at once.
	o     Outcome
	known bool
}

// Begin runs s through the pipeline's chain and queues it for the store,
// without waiting for the store: submissions begun one after another enter
// their room in that order, while their appends overlap. Wait returns the
// outcome. Begin's error is Submit's: the message did not enter.
func (in *Ingest) Begin(ctx context.Context, s Submission) (*Pending, error) {
	if err := in.waitReady(ctx); err != nil {
		return nil, err
	}
	if in.closing.Load() {
		return nil, ErrClosed
	}
	// A full store queue refuses before the chain: a send the chain
	// would refuse for what it is (too long, invalid, moderated) is then
	// told to retry, and learns its real answer on the retry.
	if in.sat != nil && in.sat.Saturated(s.Room) {
		in.overloaded.Add(1)
		in.refused.Add(1)
		return &Pending{in: in, s: s, known: true, o: Outcome{Ref: s.Ref, Room: s.Room, Err: errOverloaded}}, nil
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
	p := &Pending{in: in, s: s, msg: msg}
	p.slot.done = make(chan Outcome, 1)
	// The store's completion answers with its own timeout: a sender
	// that goes away does not cancel a store in progress.
	msg.SetContext(context.WithValue(context.Background(), outcomeKey{}, &p.slot))
	in.closeMu.RLock()
	defer in.closeMu.RUnlock()
	if in.closed {
		return nil, ErrClosed
	}
	switch in.runChain(PartitionOf(s.Room, in.cfg.Shards), msg) {
	case chainClosed:
		return nil, ErrClosed
	case chainBusy:
		in.shardBusy.Add(1)
		in.refused.Add(1)
		return &Pending{in: in, s: s, known: true, o: Outcome{Ref: s.Ref, Room: s.Room, Err: in.busyErr}}, nil
	}
	if dl := p.slot.dead; dl != nil {
		// Outside the shard's lock: a slow dead-letter store delays this
		// sender's answer only, not the other rooms of its shard.
		p.slot.dead = nil
		in.writeDeadLetter(dl)
	}
	select {
	case p.o = <-p.slot.done:
		p.known = true
	default:
	}
	return p, nil
}

// chainRun is how runChain ended.
type chainRun int

const (
	chainRan    chainRun = iota // the chain ran and settled the message
	chainClosed                 // the ingest began closing meanwhile
	chainBusy                   // the shard was held longer than ShardWait
)

// runChain runs msg through the chain under its shard's lock; settle
// answers every way out. It does not run the chain when the ingest began
// closing while msg waited for its shard (chainClosed), or when the shard
// was held too long (chainBusy): its message in the chain had held it for
// longer than ShardWait when msg came, or msg waited longer than that.
// So a slow moderator delays the other sends of its shard by at most
// about its own time, and while it is slow they are refused at once.
func (in *Ingest) runChain(shard int, msg *message.Message) chainRun {
	s := &in.shards[shard]
	now := in.clock()
	if !s.mu.TryLock() {
		if held := s.since.Load(); held != 0 && now-held > int64(in.cfg.ShardWait) {
			in.noteShardBusy(shard)
			return chainBusy
		}
		s.mu.Lock()
		if in.closing.Load() {
			s.mu.Unlock()
			return chainClosed
		}
		took := in.clock()
		if took-now > int64(in.cfg.ShardWait) {
			s.mu.Unlock()
			in.noteShardBusy(shard)
			return chainBusy
		}
		now = took
	}
	s.since.Store(now)
	defer func() {
		s.since.Store(0)
		s.mu.Unlock()
	}()
	if in.closing.Load() {
		return chainClosed
	}
	_, _ = in.handler(msg)
	// A chain that ran within the bound ends a shard's busy spell.
	if in.busyFail.Active() && in.clock()-now <= int64(in.cfg.ShardWait) {
		in.busyFail.OK(strconv.Itoa(shard))
	}
	return chainRan
}

// clock is the time since the ingest was made, in nanoseconds and at
// least 1 (0 marks a free shard), on the monotonic clock.
func (in *Ingest) clock() int64 { return int64(time.Since(in.born)) + 1 }

// noteShardBusy records a send refused because shard was held too long.
func (in *Ingest) noteShardBusy(shard int) {
	in.busyFail.Fail(strconv.Itoa(shard), fmt.Errorf("a message held the shard for longer than %v (a slow moderator?)", in.cfg.ShardWait))
}

// Wait returns the outcome of the submission, or an error when ctx ends
// first (ErrUnavailable wrapping ctx's error). It is called once.
func (p *Pending) Wait(ctx context.Context) (Outcome, error) {
	if p.known {
		return p.o, nil
	}
	// The chain has run, and the store's completion answers within
	// the store's own round-trip timeout; the bound here only guards
	// against a store that never calls back.
	t := waitTimers.Get().(*time.Timer)
	t.Reset(2 * p.in.cfg.StoreTimeout)
	defer func() {
		// Since Go 1.23 a stopped timer's channel holds nothing; the
		// drain keeps the pool right under GODEBUG=asynctimerchan=1 too.
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		waitTimers.Put(t)
	}()
	select {
	case o := <-p.slot.done:
		return o, nil
	case <-ctx.Done():
		return Outcome{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case <-t.C:
		// The message entered the pipeline and may still be stored: the
		// sender retries with the same ref, which stores it at most once.
		return Outcome{Ref: p.s.Ref, Room: p.s.Room, ID: p.msg.UUID,
			Err: &Error{Code: CodeUnavailable, Reason: "the message is not known to be stored; retry with the same ref"}}, nil
	}
}

// waitTimers holds stopped timers for Wait, which waits on one per send.
var waitTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// waitReady returns once the ingest accepts submissions: at once when it
// does (the common case costs no timer), or ctx's error, or ErrUnavailable
// after StoreTimeout.
func (in *Ingest) waitReady(ctx context.Context) error {
	select {
	case <-in.ready:
		return nil
	default:
	}
	t := time.NewTimer(in.cfg.StoreTimeout)
	defer t.Stop()
	select {
	case <-in.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		// Not ready yet (e.g. the backend was down at start): refuse
		// rather than hold the sender's connection.
		return fmt.Errorf("%w: not ready", ErrUnavailable)
	}
}

// OverloadRetry is the retry hint of a send refused because the store's
// queue is full.
const OverloadRetry = 100 * time.Millisecond

// errOverloaded refuses a send because the store's queue is full.
var errOverloaded = &Error{Code: CodeUnavailable, Reason: "the server is busy; retry with the same ref", RetryAfter: OverloadRetry}

// store is the last handler of the chain: it queues the message for the
// store and returns, so the shard takes its next message while this one's
// append is in flight (the store keeps the queue's order, so each room's
// messages are stored in the order they were accepted). The submitter gets
// its ack when the append completes. A store whose queue is full refuses
// at once with unavailable and a retry hint: an overloaded instance answers
// quickly instead of queueing.
func (in *Ingest) store(msg *message.Message) error {
	slot := slotOf(msg)
	if slot != nil {
		slot.storing.Store(true)
	}
	start := time.Now()
	err := in.cfg.Store.AppendAsync(msg, func(a Appended, err error) {
		if in.cfg.Observer != nil {
			in.cfg.Observer.AppendDone(time.Since(start), err)
		}
		in.appended(msg, a, err)
	})
	if err == nil {
		return nil
	}
	if slot != nil {
		slot.storing.Store(false)
	}
	if errors.Is(err, ErrOverloaded) {
		in.overloaded.Add(1)
		return errOverloaded
	}
	in.log.Debug("store failed", "msg_id", msg.UUID, "room", msg.Metadata.Get(MetaRoom), "err", err)
	in.storeFail.Fail("", err)
	observeError(in.cfg.Observer, OpAppend)
	return &Error{Code: CodeUnavailable, Reason: "the message could not be stored; retry with the same ref"}
}

// appended answers the submitter of msg once its append completed. A
// duplicate send is acked with the id and seq stored the first time.
func (in *Ingest) appended(msg *message.Message, a Appended, err error) {
	room, ref := msg.Metadata.Get(MetaRoom), msg.Metadata.Get(MetaRef)
	if err != nil {
		in.log.Debug("store failed", "msg_id", msg.UUID, "room", room, "err", err)
		in.storeFail.Fail("", err)
		observeError(in.cfg.Observer, OpAppend)
		in.refused.Add(1)
		in.reply(msg, Outcome{Ref: ref, Room: room, ID: msg.UUID,
			Err: &Error{Code: CodeUnavailable, Reason: "the message could not be stored; retry with the same ref"}})
		return
	}
	in.storeFail.OK("")
	if a.Duplicate {
		in.log.Debug("duplicate send acked with the stored message", "msg_id", a.ID, "dropped_id", msg.UUID,
			"room", room, "user", msg.Metadata.Get(MetaUser), "ref", ref)
	} else {
		in.stored.Add(1)
	}
	in.reply(msg, Outcome{Ref: ref, Room: room, ID: a.ID, Seq: a.Seq, Epoch: a.Epoch, Duplicate: a.Duplicate})
}

// settle is the outermost middleware: it turns every error of the chain into
// an error outcome for the submitter and dead-letters rejected messages, so
// every message that enters the chain is answered exactly once.
func (in *Ingest) settle(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		_, err := h(msg)
		if slot := slotOf(msg); slot != nil && slot.storing.Load() {
			// The message was queued for the store, whose completion
			// answers; a middleware that fails after calling next cannot
			// take that back.
			if err != nil {
				in.chainFailed(err)
			} else if in.chainFail.Active() {
				in.chainFail.OK("")
			}
			return nil, nil
		}
		if err == nil {
			// A middleware that returns without calling the next handler
			// must still answer the sender.
			in.reply(msg, Outcome{Ref: msg.Metadata.Get(MetaRef), Room: msg.Metadata.Get(MetaRoom), ID: msg.UUID,
				Err: &Error{Code: CodeInternal, Reason: "the message was not stored"}})
			return nil, nil
		}
		var perr *Error
		if !errors.As(err, &perr) {
			in.chainFailed(fmt.Errorf("message %s: %w", msg.UUID, err))
			perr = &Error{Code: CodeInternal, Reason: "internal error"}
		}
		in.refused.Add(1)
		if perr.Code == CodeRejected {
			in.deadLetter(msg, perr)
		}
		in.reply(msg, Outcome{Ref: msg.Metadata.Get(MetaRef), Room: msg.Metadata.Get(MetaRoom), ID: msg.UUID, Err: perr})
		return nil, nil
	}
}

// chainFailed reports a middleware that failed unexpectedly (an error that
// is no refusal, a recovered panic): once while it lasts, not once per
// message (faillog); a message stored after it ends it.
func (in *Ingest) chainFailed(err error) {
	in.chainFail.Fail("", err)
}

// deadLetter records msg, refused with perr, as a dead letter: by Begin,
// once the chain has left the shard, for a submission; at once otherwise.
func (in *Ingest) deadLetter(msg *message.Message, perr *Error) {
	dl := msg.Copy()
	dl.Metadata.Set(MetaReason, perr.Reason)
	dl.Metadata.Set(MetaCode, perr.Code)
	dl.Metadata.Set(MetaModerator, perr.Moderator)
	if slot := slotOf(msg); slot != nil {
		slot.dead = dl
		return
	}
	in.writeDeadLetter(dl)
}

// writeDeadLetter stores dl, within StoreTimeout; a failure is counted and
// reported once while it lasts (faillog), not once per message.
func (in *Ingest) writeDeadLetter(dl *message.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.StoreTimeout)
	defer cancel()
	if err := in.cfg.DeadLetters.DeadLetter(ctx, dl); err != nil {
		observeError(in.cfg.Observer, OpDeadLetter)
		in.log.Debug("dead letter failed", "msg_id", dl.UUID, "err", err)
		in.deadFail.Fail("", err)
		return
	}
	in.deadFail.OK("")
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
