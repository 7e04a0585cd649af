package memstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestPresenceContract runs the presence contract suite against the memory
// backend: the instances of a deployment share one Backend.
func TestPresenceContract(t *testing.T) {
	storetest.Presence(t, func(t *testing.T) storetest.NewPresence {
		b := newBackend(t)
		return func(instanceID string, ttl time.Duration) pipeline.Presence {
			return b.NewPresence(instanceID, ttl)
		}
	})
}

// newBackend returns a default Backend, closed in t.Cleanup.
func newBackend(t *testing.T) *Backend {
	t.Helper()
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// entries returns the expiry of each of the registry's entries, after t0,
// keyed "room:instance|user".
func (r *presenceRegistry) entries(t0 time.Time) map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Duration)
	for room, entries := range r.rooms {
		for e, expiry := range entries {
			out[room+":"+e.instance+"|"+e.user] = expiry.Sub(t0)
		}
	}
	return out
}

// TestPresenceRegistryKeepsOnlyLiveEntries: the registry holds only live
// entries, with the expiry of their instance's last sync, and forgets
// rooms without entries (on a clock of its own, so without waiting).
func TestPresenceRegistryKeepsOnlyLiveEntries(t *testing.T) {
	const ttl = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)
	r := newPresenceRegistry()
	steps := []struct {
		name     string
		instance string
		at       time.Duration // after t0
		ttl      time.Duration
		local    map[string][]string
		want     map[string]time.Duration
	}{
		{"a joins", "a", 0, ttl, map[string][]string{"lobby": {"alice"}, "den": {"dave"}},
			map[string]time.Duration{"lobby:a|alice": ttl, "den:a|dave": ttl}},
		{"b joins later", "b", 5 * time.Second, ttl, map[string][]string{"lobby": {"bob"}},
			map[string]time.Duration{"lobby:a|alice": ttl, "den:a|dave": ttl, "lobby:b|bob": 15 * time.Second}},
		{"a refreshes and leaves the den", "a", 8 * time.Second, ttl, map[string][]string{"lobby": {"alice"}},
			map[string]time.Duration{"lobby:a|alice": 18 * time.Second, "lobby:b|bob": 15 * time.Second}},
		{"a expired for b", "b", 18 * time.Second, ttl, map[string][]string{"lobby": {"bob"}},
			map[string]time.Duration{"lobby:b|bob": 28 * time.Second}},
		{"c with a short ttl", "c", 19 * time.Second, time.Second, map[string][]string{"attic": {"carol"}},
			map[string]time.Duration{"lobby:b|bob": 28 * time.Second, "attic:c|carol": 20 * time.Second}},
		{"b withdraws after c expired", "b", 20 * time.Second, ttl, map[string][]string{},
			map[string]time.Duration{}},
	}
	for _, s := range steps {
		r.sync(s.instance, s.ttl, t0.Add(s.at), s.local)
		if got := r.entries(t0); fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Fatalf("after %q: entries %v, want %v", s.name, got, s.want)
		}
	}
	if got := len(r.rooms); got != 0 {
		t.Fatalf("%d rooms left without entries, want 0", got)
	}
}

// TestPresenceDefaultTTL: a ttl of zero means pipeline.DefaultPresenceTTL.
func TestPresenceDefaultTTL(t *testing.T) {
	b := newBackend(t)
	if got := b.NewPresence("a", 0).ttl; got != pipeline.DefaultPresenceTTL {
		t.Fatalf("ttl = %v, want %v", got, pipeline.DefaultPresenceTTL)
	}
	if got := b.NewPresence("a", time.Second).ttl; got != time.Second {
		t.Fatalf("ttl = %v, want 1s", got)
	}
}
