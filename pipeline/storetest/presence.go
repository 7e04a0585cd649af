package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// NewPresence returns the presence of the instance named instanceID in one
// deployment; a ttl of zero means pipeline.DefaultPresenceTTL.
type NewPresence func(instanceID string, ttl time.Duration) pipeline.Presence

// PresenceFactory returns a new deployment without presence entries, whose
// instances share presence as instances sharing one backend do. It closes
// what it opens in t.Cleanup.
type PresenceFactory func(t *testing.T) NewPresence

// Presence TTLs of the tests.
const (
	// shortTTL is the TTL of an instance the tests let expire.
	shortTTL = 300 * time.Millisecond
	// liveTTL is the TTL of an instance that must not expire while it
	// syncs every pollEvery; it is long enough that only a scheduling
	// stall of a good part of a second could make it expire.
	liveTTL = time.Second
	// pollEvery is the interval of the syncs of a test that waits.
	pollEvery = 20 * time.Millisecond
)

// Presence runs the presence contract suite against the deployments made
// by open. The subtests run in parallel, each in its own deployment.
func Presence(t *testing.T, open PresenceFactory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newPresence NewPresence)
	}{
		{"Join", presenceJoin},
		{"Leave", presenceLeave},
		{"Withdraw", presenceWithdraw},
		{"DeadInstanceExpires", presenceDeadInstanceExpires},
		{"LiveInstanceStays", presenceLiveInstanceStays},
		{"RoomsIndependent", presenceRoomsIndependent},
		{"SortedAndDistinct", presenceSortedAndDistinct},
		{"SnapshotAfterChanges", presenceSnapshotAfterChanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// rooms is a presence map, written briefly.
type rooms = map[string][]string

// syncPresence syncs p with local and returns what it reports.
func syncPresence(t *testing.T, p pipeline.Presence, local rooms) rooms {
	t.Helper()
	got, err := p.Sync(context.Background(), local)
	if err != nil {
		t.Fatalf("sync %v: %v", local, err)
	}
	return got
}

// wantPresence fails unless got equals want (a nil and an empty user list
// are equal).
func wantPresence(t *testing.T, what string, got, want rooms) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// syncUntil syncs p with local every pollEvery, first syncing each of
// others with its own local, until p reports want; it fails after wait.
func syncUntil(t *testing.T, what string, p pipeline.Presence, local, want rooms, others ...func()) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for _, other := range others {
			other()
		}
		got := syncPresence(t, p, local)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v, want %v", what, got, wait, want)
		}
		time.Sleep(pollEvery)
	}
}

func presenceJoin(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	wantPresence(t, "a alone", syncPresence(t, a, rooms{"lobby": {"alice"}}), rooms{"lobby": {"alice"}})
	wantPresence(t, "b after a", syncPresence(t, b, rooms{"lobby": {"bob"}}), rooms{"lobby": {"alice", "bob"}})
	wantPresence(t, "a after b", syncPresence(t, a, rooms{"lobby": {"alice"}}), rooms{"lobby": {"alice", "bob"}})
}

// presenceLeave: a user who leaves one instance disappears for the other,
// and a user on both instances (two connections) stays until both left.
func presenceLeave(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	syncPresence(t, a, rooms{"lobby": {"alice", "carol"}})
	all := rooms{"lobby": {"alice", "bob", "carol"}}
	wantPresence(t, "b with carol on both", syncPresence(t, b, rooms{"lobby": {"bob", "carol"}}), all)
	wantPresence(t, "a with carol on both", syncPresence(t, a, rooms{"lobby": {"alice", "carol"}}), all)

	wantPresence(t, "a after alice left", syncPresence(t, a, rooms{"lobby": {"carol"}}), rooms{"lobby": {"bob", "carol"}})
	wantPresence(t, "b after alice left a", syncPresence(t, b, rooms{"lobby": {"bob", "carol"}}), rooms{"lobby": {"bob", "carol"}})

	syncPresence(t, a, rooms{"den": {"dave"}})
	wantPresence(t, "b after carol left a only", syncPresence(t, b, rooms{"lobby": {"bob", "carol"}}), rooms{"lobby": {"bob", "carol"}})
	wantPresence(t, "b after carol left b too", syncPresence(t, b, rooms{"lobby": {"bob"}}), rooms{"lobby": {"bob"}})
	wantPresence(t, "a joining again after both left", syncPresence(t, a, rooms{"lobby": {"dave"}}), rooms{"lobby": {"bob", "dave"}})
}

// presenceWithdraw: a Sync with no rooms removes every user of the
// instance.
func presenceWithdraw(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	local := rooms{"lobby": {"bob"}, "den": {"erin"}}
	syncPresence(t, a, rooms{"lobby": {"alice"}, "den": {"alice", "dave"}})
	wantPresence(t, "b before a withdrew", syncPresence(t, b, local), rooms{"lobby": {"alice", "bob"}, "den": {"alice", "dave", "erin"}})
	wantPresence(t, "a withdrawing", syncPresence(t, a, rooms{}), rooms{})
	wantPresence(t, "b after a withdrew", syncPresence(t, b, local), local)
}

// presenceDeadInstanceExpires: the users of an instance that stops syncing
// disappear for the others after its TTL.
func presenceDeadInstanceExpires(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", shortTTL), newPresence("b", shortTTL)
	local := rooms{"lobby": {"bob"}}
	// a syncs until b has seen alice, so alice cannot expire before.
	syncUntil(t, "b while a is alive", b, local, rooms{"lobby": {"alice", "bob"}},
		func() { syncPresence(t, a, rooms{"lobby": {"alice"}, "den": {"dave"}}) })
	// a stops syncing.
	syncUntil(t, "b after a stopped", b, local, local)
}

// presenceLiveInstanceStays: an instance that keeps syncing is not expired,
// however many TTLs pass: each Sync refreshes its entries.
func presenceLiveInstanceStays(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", liveTTL), newPresence("b", liveTTL)
	both := rooms{"lobby": {"alice", "bob"}}
	for end := time.Now().Add(5 * liveTTL / 2); time.Now().Before(end); time.Sleep(pollEvery) {
		syncPresence(t, a, rooms{"lobby": {"alice"}})
		wantPresence(t, "b while a syncs", syncPresence(t, b, rooms{"lobby": {"bob"}}), both)
	}
}

// presenceRoomsIndependent: each room has its own users, and an instance
// hears only of its own rooms.
func presenceRoomsIndependent(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	syncPresence(t, a, rooms{"lobby": {"alice"}, "den": {"dave"}})
	wantPresence(t, "b", syncPresence(t, b, rooms{"lobby": {"bob"}, "attic": {"erin"}}), rooms{"lobby": {"alice", "bob"}, "attic": {"erin"}})
	wantPresence(t, "a", syncPresence(t, a, rooms{"lobby": {"alice"}, "den": {"dave"}}), rooms{"lobby": {"alice", "bob"}, "den": {"dave"}})

	wantPresence(t, "a after leaving the lobby", syncPresence(t, a, rooms{"den": {"dave"}}), rooms{"den": {"dave"}})
	wantPresence(t, "b after a left the lobby", syncPresence(t, b, rooms{"lobby": {"bob"}, "attic": {"erin"}}), rooms{"lobby": {"bob"}, "attic": {"erin"}})
	wantPresence(t, "b joining the den", syncPresence(t, b, rooms{"den": {"bob"}}), rooms{"den": {"bob", "dave"}})
}

// presenceSortedAndDistinct: users come sorted, once each, however many
// instances and connections they are on.
func presenceSortedAndDistinct(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	syncPresence(t, a, rooms{"lobby": {"zoe", "alice", "mike", "alice"}})
	want := rooms{"lobby": {"alice", "bob", "mike", "zoe"}}
	got := syncPresence(t, b, rooms{"lobby": {"mike", "bob"}})
	wantPresence(t, "b", got, want)
	if !slices.IsSorted(got["lobby"]) {
		t.Fatalf("b's lobby = %v, not sorted", got["lobby"])
	}
	wantPresence(t, "a", syncPresence(t, a, rooms{"lobby": {"zoe", "alice", "mike", "alice"}}), want)
}

// presenceSnapshotAfterChanges: the sequence of views that an instance
// turns into joined/left diffs follows another instance's changes, one
// sync round each.
func presenceSnapshotAfterChanges(t *testing.T, newPresence NewPresence) {
	a, b := newPresence("a", 0), newPresence("b", 0)
	local := rooms{"lobby": {"bob"}}
	steps := []struct {
		name string
		a    rooms
		want []string // b's lobby
	}{
		{"alice joins", rooms{"lobby": {"alice"}}, []string{"alice", "bob"}},
		{"carol joins", rooms{"lobby": {"alice", "carol"}}, []string{"alice", "bob", "carol"}},
		{"alice leaves", rooms{"lobby": {"carol"}}, []string{"bob", "carol"}},
		{"bob joins a too", rooms{"lobby": {"bob", "carol"}}, []string{"bob", "carol"}},
		{"another room changes", rooms{"lobby": {"bob", "carol"}, "den": {"dave"}}, []string{"bob", "carol"}},
		{"a withdraws", rooms{}, []string{"bob"}},
		{"alice comes back", rooms{"lobby": {"alice"}}, []string{"alice", "bob"}},
		{"nothing changes", rooms{"lobby": {"alice"}}, []string{"alice", "bob"}},
	}
	wantPresence(t, "b alone", syncPresence(t, b, local), local)
	var got, want [][]string
	for _, s := range steps {
		syncPresence(t, a, s.a)
		got = append(got, syncPresence(t, b, local)["lobby"])
		want = append(want, s.want)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		for i, s := range steps {
			if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
				t.Errorf("after %q: b saw %v, want %v", s.name, got[i], want[i])
			}
		}
		t.Fatalf("b saw %v, want %v", got, want)
	}
}
