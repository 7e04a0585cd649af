package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/chatstream/chatstream/pipeline"
)

// ErrSameRoom reports a replay into the room it reads from.
var ErrSameRoom = errors.New("cannot replay a room into itself")

// PublisherConfig configures a Publisher. A zero field takes the default in
// its comment.
type PublisherConfig struct {
	// Backend stores the messages and records refusals. Required. The
	// Publisher does not close it, and subscribes to no feed.
	Backend Store
	// Moderators run, in order, on every message, as on an instance: pass
	// the deployment's chain so replayed and requeued messages are moderated
	// like any other.
	Moderators []pipeline.Moderator
	// MaxTextBytes limits a message's text. Default 4096.
	MaxTextBytes int
	// Logger receives the pipeline's diagnostics. Default slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds the wait for the pipeline to subscribe to every
	// partition (it retries while Redis is unavailable). Default 15s.
	StartTimeout time.Duration
}

// Store is what a Publisher writes to: the store and the dead letters of a
// deployment (*redisstore.Backend implements it).
type Store interface {
	pipeline.Store
	pipeline.DeadLetters
}

// Publisher submits messages through a pipeline.Ingest of its own, so they
// are validated, moderated and stored exactly like the messages of a
// connected client; the deployment's instances deliver them. It is safe for
// concurrent use.
type Publisher struct {
	in     *pipeline.Ingest
	connID string
	cancel context.CancelFunc
	// done is closed when the pipeline's Run has returned; runErr is its
	// error, read only after done.
	done   chan struct{}
	runErr error
}

// DefaultStartTimeout is the default bound of StartPublisher.
const DefaultStartTimeout = 15 * time.Second

// StartPublisher builds an ingest over cfg.Backend, runs it, and returns
// once it accepts submissions, or fails when ctx is done or StartTimeout
// passes first. Close stops it.
func StartPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Backend == nil {
		return nil, errors.New("replay: publisher: backend is required")
	}
	in, err := pipeline.NewIngest(pipeline.IngestConfig{
		Store: cfg.Backend, DeadLetters: cfg.Backend, Logger: cfg.Logger,
		MaxTextBytes: cfg.MaxTextBytes, Moderators: cfg.Moderators,
	})
	if err != nil {
		return nil, fmt.Errorf("replay: publisher: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	pub := &Publisher{in: in, connID: "replay-" + uuid.NewString()[:8], cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(pub.done)
		pub.runErr = in.Run(rctx)
	}()
	timeout := time.NewTimer(cfg.StartTimeout)
	defer timeout.Stop()
	select {
	case <-in.Running():
		return pub, nil
	case <-ctx.Done():
		_ = pub.Close() // the caller's ctx error says why
		return nil, fmt.Errorf("replay: publisher: %w", ctx.Err())
	case <-timeout.C:
		_ = pub.Close() // the timeout says why
		return nil, fmt.Errorf("replay: publisher did not start within %v: %w", cfg.StartTimeout, pipeline.ErrUnavailable)
	case <-pub.done:
		cancel()
		return nil, fmt.Errorf("replay: publisher stopped: %w", pub.runErr)
	}
}

// Close stops the pipeline and waits for it.
func (p *Publisher) Close() error {
	p.cancel()
	<-p.done
	return p.runErr
}

// Publish submits s and returns its outcome. s.ConnID is replaced by the
// publisher's, so stored messages show where they came from.
func (p *Publisher) Publish(ctx context.Context, s pipeline.Submission) (pipeline.Outcome, error) {
	s.ConnID = p.connID
	o, err := p.in.Submit(ctx, s)
	if err != nil {
		return pipeline.Outcome{}, fmt.Errorf("replay: submit: %w", err)
	}
	return o, nil
}

// Result is the outcome of one republished message: one line of the
// --into and --requeue reports.
type Result struct {
	// From is the source: "<room>/<seq>" for a replay, the dead-letter ID
	// for a requeue.
	From string `json:"from"`
	// Room is the room the message was sent to.
	Room string `json:"room"`
	// Seq is the new message's seq when it was stored; for a duplicate,
	// the seq stored the first time.
	Seq string `json:"seq,omitempty"`
	// Duplicate reports a message stored already under the same user,
	// room and ref within the deployment's idempotency window (a dead
	// letter requeued again): nothing was stored again.
	Duplicate bool `json:"duplicate,omitempty"`
	// Error is set when the message was refused.
	Error *ResultError `json:"error,omitempty"`
}

// ResultError is a refusal of a republished message.
type ResultError struct {
	// Code is the pipeline error code (rejected, invalid, ...).
	Code string `json:"code"`
	// Reason is the refusal shown to a sender.
	Reason string `json:"reason"`
	// Moderator names the moderator that rejected the message, if any.
	Moderator string `json:"moderator,omitempty"`
}

func result(from, room string, o pipeline.Outcome) Result {
	r := Result{From: from, Room: room, Seq: o.Seq, Duplicate: o.Duplicate}
	if o.Err != nil {
		r.Error = &ResultError{Code: o.Err.Code, Reason: o.Err.Reason, Moderator: o.Err.Moderator}
	}
	return r
}

// Replay sends message e again, by its original user, into room into, with
// MetaReplayedFrom set to "<room>/<seq>" of e.
func (p *Publisher) Replay(ctx context.Context, e Entry, into string) (Result, error) {
	if into == e.Room {
		return Result{}, fmt.Errorf("replay %s: %w", into, ErrSameRoom)
	}
	from := e.Room + "/" + e.ID
	o, err := p.Publish(ctx, pipeline.Submission{
		User: e.User, Room: into, Text: e.Text,
		Meta: map[string]string{MetaReplayedFrom: from},
	})
	if err != nil {
		return Result{}, err
	}
	return result(from, into, o), nil
}

// Requeue sends dead letter e through the pipeline again, into its room, by
// its user, with MetaRequeuedFrom set to its ID. The dead letter is kept; a
// message refused again is dead-lettered again (with MetaRequeuedFrom).
// It carries the dead letter's ref, so requeueing a dead letter again
// within the idempotency window stores nothing: the Result has Duplicate
// set and the seq stored the first time.
func (p *Publisher) Requeue(ctx context.Context, e Entry) (Result, error) {
	o, err := p.Publish(ctx, pipeline.Submission{
		User: e.User, Room: e.Room, Text: e.Text, Ref: e.Ref,
		Meta: map[string]string{MetaRequeuedFrom: e.ID},
	})
	if err != nil {
		return Result{}, err
	}
	return result(e.ID, e.Room, o), nil
}

// ParseSpeed parses a replay speed: "10x" or "10" (ten times faster),
// "0.5x" (half as fast), or "max" (no waiting, returned as 0).
func ParseSpeed(s string) (float64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "max" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "x"), 64)
	if err != nil || f <= 0 || f > 1e6 {
		return 0, fmt.Errorf("speed %q: want a factor such as 10x, 0.5x or max", s)
	}
	return f, nil
}

// Pacer spaces a replay like the original: the i-th message goes out when
// its original offset from the first message, divided by the speed, has
// passed since the first went out. It waits against that schedule, not
// after each message, so the time spent sending does not add up.
type Pacer struct {
	speed         float64
	first, origin time.Time
	started       bool
}

// NewPacer returns a pacer for speed (0: no waiting).
func NewPacer(speed float64) *Pacer { return &Pacer{speed: speed} }

// Wait returns when the message originally sent at ts is due, or with ctx's
// error when ctx is done first. Original times that go backwards (clocks of
// different instances) do not wait.
func (p *Pacer) Wait(ctx context.Context, ts time.Time) error {
	if p.speed == 0 {
		return ctx.Err()
	}
	if !p.started {
		p.started, p.first, p.origin = true, ts, time.Now()
		return ctx.Err()
	}
	due := p.origin.Add(time.Duration(float64(ts.Sub(p.first)) / p.speed))
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
