package memstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// InstanceTTL is how long an instance's record outlives its last refresh,
// as in the Redis backend.
const InstanceTTL = 30 * time.Second

var (
	_ pipeline.InstanceRecorder = (*Backend)(nil)
	_ pipeline.BusStater        = (*Backend)(nil)
)

// instanceRegistry holds the records of the instances using one memory
// backend.
type instanceRegistry struct {
	// mu guards records: each instance's last record and its expiry.
	mu      sync.Mutex
	records map[string]instanceRecord
}

type instanceRecord struct {
	info    pipeline.InstanceInfo
	expires time.Time
}

func newInstanceRegistry() *instanceRegistry {
	return &instanceRegistry{records: make(map[string]instanceRecord)}
}

// RecordInstance keeps info until InstanceTTL after this call.
func (b *Backend) RecordInstance(_ context.Context, info pipeline.InstanceInfo) error {
	r := b.instances
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for id, rec := range r.records { // bounded by the live instances
		if now.After(rec.expires) {
			delete(r.records, id)
		}
	}
	info.Positions = slices.Clone(info.Positions)
	r.records[info.ID] = instanceRecord{info: info, expires: now.Add(InstanceTTL)}
	return nil
}

// Instances returns the records of the instances that recorded themselves
// within InstanceTTL, by id.
func (b *Backend) Instances(context.Context) ([]pipeline.InstanceInfo, error) {
	r := b.instances
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]pipeline.InstanceInfo, 0, len(r.records))
	for _, rec := range r.records {
		if now.Before(rec.expires) {
			out = append(out, rec.info)
		}
	}
	slices.SortFunc(out, func(a, b pipeline.InstanceInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
