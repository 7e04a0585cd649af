package ws

import (
	"context"
	"slices"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

// MaxPresenceList caps the user names in one presence frame; count always
// gives the total. A member's list may be incomplete only while the room
// has more users than this (docs/PROTOCOL.md §8).
const MaxPresenceList = 100

type presenceFrame struct {
	Type   string   `json:"type"`
	Room   string   `json:"room"`
	Users  []string `json:"users,omitempty"`
	Joined []string `json:"joined,omitempty"`
	Left   []string `json:"left,omitempty"`
	Count  int      `json:"count"`
}

// RunPresence keeps presence up to date every interval until ctx is done:
// it syncs the local members with store and sends each local room's members
// a presence diff when the room's users changed. Rooms with thousands of
// members cost one diff frame per interval at most.
func (h *Hub) RunPresence(ctx context.Context, store pipeline.Presence, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Withdraw this instance's members at once instead of letting
			// them expire elsewhere.
			fctx, cancel := context.WithTimeout(context.Background(), every)
			_, _ = store.Sync(fctx, map[string][]string{}) // best effort: entries expire anyway
			cancel()
			return
		case <-tick.C:
		}
		local := h.localUsers() // before the store's deadline starts
		sctx, cancel := context.WithTimeout(ctx, every)
		global, err := store.Sync(sctx, local)
		cancel()
		if err != nil {
			h.log.Debug("presence sync failed", "err", err)
			continue
		}
		h.publishPresence(global)
	}
}

// localUsers returns the distinct users of every room with local members,
// sorted. The shards' locks are held only while their members are listed.
func (h *Hub) localUsers() map[string][]string {
	out := make(map[string][]string)
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for room, members := range s.rooms {
			users := make([]string, 0, len(members))
			for c := range members {
				users = append(users, c.user)
			}
			out[room] = users
		}
		s.mu.Unlock()
	}
	for room, users := range out {
		slices.Sort(users)
		out[room] = slices.Compact(users) // a user with several connections once
	}
	return out
}

// publishPresence sends a change to the members of every room whose users
// changed, and remembers the new sets. A room that had MaxPresenceList
// users or more and has MaxPresenceList or fewer gets a snapshot instead,
// since its members' lists may lack names: a snapshot holds at most
// MaxPresenceList names (a joiner's, of MaxPresenceList users and itself,
// too), and so do a change's joined and left.
func (h *Hub) publishPresence(global map[string][]string) {
	h.presMu.Lock()
	prev := h.presence
	h.presence = global
	h.presMu.Unlock()
	for room, users := range global {
		joined, left := diffSorted(prev[room], users)
		if len(joined) == 0 && len(left) == 0 {
			continue
		}
		f := presenceFrame{Type: TypePresence, Room: room, Count: len(users)}
		if len(prev[room]) >= MaxPresenceList && len(users) <= MaxPresenceList {
			// users is never empty: Sync returns only rooms with local
			// members, so the frame keeps its users field.
			f.Users = users
		} else {
			f.Joined, f.Left = capList(joined), capList(left)
		}
		frame := encode(f)
		s := h.shard(room)
		s.mu.Lock()
		for c, m := range s.rooms[room] {
			if m.ready {
				c.enqueue(frame)
			}
		}
		s.mu.Unlock()
	}
}

// presenceSnapshot encodes the presence frame a new member gets after
// joined: the last known users of room, with user among them.
func (h *Hub) presenceSnapshot(room, user string) []byte {
	h.presMu.Lock()
	users := h.presence[room]
	h.presMu.Unlock()
	if _, found := slices.BinarySearch(users, user); !found {
		users = slices.Insert(slices.Clone(users), 0, user)
		slices.Sort(users)
	}
	return encode(presenceFrame{Type: TypePresence, Room: room, Users: capList(users), Count: len(users)})
}

func capList(xs []string) []string {
	if len(xs) > MaxPresenceList {
		return xs[:MaxPresenceList]
	}
	return xs
}

// diffSorted returns the elements only in b (joined) and only in a (left)
// of two sorted lists.
func diffSorted(a, b []string) (joined, left []string) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i] < b[j]:
			left = append(left, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			joined = append(joined, b[j])
			j++
		default:
			i++
			j++
		}
	}
	return joined, left
}
