package pipeline

import (
	"context"
	"errors"
	"sync"
)

// Config configures a Pipeline: the ingest and the delivery of one instance.
type Config struct {
	// Ingest configures the submissions' path to the store. Its Gate, when
	// nil, is the delivery's Running.
	Ingest IngestConfig
	// Delivery configures the path from the feed to the Deliverer.
	Delivery DeliveryConfig
}

// Stats are counters of a running pipeline.
type Stats struct {
	Stored, Refused, Delivered, Undecodable int64
	// Overloaded counts the refusals (included in Refused) because the
	// store's queue was full.
	Overloaded int64
	// ShardBusy counts the refusals (included in Refused) because a
	// message held the send's ingress shard longer than ShardWait (a slow
	// moderator).
	ShardBusy int64
}

// Pipeline is what an instance runs: an Ingest whose submissions wait until
// its Delivery follows every partition, so a message stored here is also
// delivered here. Create it with New and start it with Run.
type Pipeline struct {
	ingest   *Ingest
	delivery *Delivery
}

// New builds a pipeline from cfg.
func New(cfg Config) (*Pipeline, error) {
	d, err := NewDelivery(cfg.Delivery)
	if err != nil {
		return nil, err
	}
	if cfg.Ingest.Gate == nil {
		cfg.Ingest.Gate = d.Running()
	}
	in, err := NewIngest(cfg.Ingest)
	if err != nil {
		return nil, err
	}
	return &Pipeline{ingest: in, delivery: d}, nil
}

// Run runs the ingest and the delivery until ctx is done.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var derr error
	wg.Go(func() { derr = p.delivery.Run(ctx) })
	ierr := p.ingest.Run(ctx)
	wg.Wait()
	return errors.Join(ierr, derr)
}

// Running is closed once the pipeline accepts submissions and delivers.
func (p *Pipeline) Running() <-chan struct{} { return p.ingest.Running() }

// Submit runs s through the ingest and returns its outcome (see
// Ingest.Submit).
func (p *Pipeline) Submit(ctx context.Context, s Submission) (Outcome, error) {
	return p.ingest.Submit(ctx, s)
}

// Begin runs s through the ingest's chain and queues it for the store
// without waiting for it (see Ingest.Begin).
func (p *Pipeline) Begin(ctx context.Context, s Submission) (*Pending, error) {
	return p.ingest.Begin(ctx, s)
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	st := p.ingest.Stats()
	st.Delivered, st.Undecodable = p.delivery.delivered.Load(), p.delivery.undecodable.Load()
	return st
}

// Positions returns how far this instance has read each partition (see
// Delivery.Positions).
func (p *Pipeline) Positions() []string { return p.delivery.Positions() }
