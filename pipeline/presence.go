package pipeline

import (
	"context"
	"time"
)

// Presence is one instance's view of who is in which room, shared with every
// other instance of the deployment through the backend. Implementations are
// returned per instance (memstore.Backend.NewPresence,
// redisstore.Backend.NewPresence) and Sync is called by one goroutine at a
// time.
type Presence interface {
	// Sync records this instance's users of every room it has members in
	// (rooms missing from local have none here any more; an empty map
	// withdraws the instance) and returns, for each room of local, the
	// users present on any live instance, sorted and distinct. An instance
	// that stops calling Sync is forgotten once its entries' TTL passes.
	Sync(ctx context.Context, local map[string][]string) (map[string][]string, error)
}

// DefaultPresenceTTL is how long an instance's presence entries outlive its
// last Sync; the entries of a crashed instance disappear after it. Sync
// refreshes them every third of it.
const DefaultPresenceTTL = 15 * time.Second
