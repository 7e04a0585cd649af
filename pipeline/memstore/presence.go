package memstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// Presence is one instance's view of the presence registry of a Backend.
// Every Presence of the same Backend shares the registry, so two instances
// in one process see each other's users as two instances on one Redis do.
// It is safe for concurrent use.
type Presence struct {
	reg      *presenceRegistry
	instance string
	ttl      time.Duration
}

var _ pipeline.Presence = (*Presence)(nil)

// NewPresence returns the presence of the instance named instanceID, whose
// entries outlive its last Sync by ttl. A ttl of zero (or less) means
// pipeline.DefaultPresenceTTL.
func (b *Backend) NewPresence(instanceID string, ttl time.Duration) *Presence {
	if ttl <= 0 {
		ttl = pipeline.DefaultPresenceTTL
	}
	return &Presence{reg: b.presence, instance: instanceID, ttl: ttl}
}

// Sync implements pipeline.Presence: it replaces this instance's entries
// with local, all expiring ttl from now, and returns the users of every
// room of local present on any instance whose entries have not expired.
func (p *Presence) Sync(ctx context.Context, local map[string][]string) (map[string][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.reg.sync(p.instance, p.ttl, time.Now(), local), nil
}

// presenceRegistry holds the presence entries of every instance sharing a
// memory backend. Only live entries are kept: every sync drops the expired
// ones, so the registry holds at most the users of the instances that
// synced within their ttl.
type presenceRegistry struct {
	// mu guards rooms.
	mu sync.Mutex
	// rooms maps a room to the expiry of each of its entries; a room
	// without entries is deleted.
	rooms map[string]map[presenceEntry]time.Time
}

// presenceEntry is one user of a room on one instance.
type presenceEntry struct {
	instance, user string
}

func newPresenceRegistry() *presenceRegistry {
	return &presenceRegistry{rooms: make(map[string]map[presenceEntry]time.Time)}
}

// sync records, at now, instance's users of every room of local (and none
// anywhere else), expiring at now+ttl, drops every expired entry, and
// returns the users present in each room of local, sorted and distinct.
// It costs one pass over all entries.
func (r *presenceRegistry) sync(instance string, ttl time.Duration, now time.Time, local map[string][]string) map[string][]string {
	has := make(map[string]map[string]bool, len(local))
	for room, users := range local {
		set := make(map[string]bool, len(users))
		for _, u := range users {
			set[u] = true
		}
		has[room] = set
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Expire: drop the expired entries, and this instance's users that
	// are no longer here.
	for room, entries := range r.rooms {
		for e, expiry := range entries {
			if !expiry.After(now) || e.instance == instance && !has[room][e.user] {
				delete(entries, e)
			}
		}
		if len(entries) == 0 {
			delete(r.rooms, room)
		}
	}
	// Write: add or refresh this instance's users.
	expiry := now.Add(ttl)
	for room, users := range has {
		if len(users) == 0 {
			continue
		}
		entries := r.rooms[room]
		if entries == nil {
			entries = make(map[presenceEntry]time.Time, len(users))
			r.rooms[room] = entries
		}
		for u := range users {
			entries[presenceEntry{instance, u}] = expiry
		}
	}
	// Read: every local room's users, across instances.
	out := make(map[string][]string, len(local))
	for room := range local {
		users := make([]string, 0, len(r.rooms[room]))
		for e := range r.rooms[room] {
			users = append(users, e.user)
		}
		slices.Sort(users)
		out[room] = slices.Compact(users)
	}
	return out
}
