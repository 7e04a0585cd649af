package ws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/ws"
)

// heldPresence is a pipeline.Presence that, while held, records the local
// users it is given but answers with the users it answered last, so that
// several joins and leaves reach the members in one presence round.
type heldPresence struct {
	pipeline.Presence

	// mu guards the fields below.
	mu   sync.Mutex
	held bool
	// local is the last local users given; last is the last answer, and
	// published the one before the current call, which the hub has
	// published (it publishes an answer before it calls again).
	local, last, published map[string][]string
}

var _ pipeline.Presence = (*heldPresence)(nil)

// Sync records local and answers as the wrapped Presence does, or, while
// held, with its last answer.
func (p *heldPresence) Sync(ctx context.Context, local map[string][]string) (map[string][]string, error) {
	p.mu.Lock()
	p.local, p.published = local, p.last
	if p.held && p.last != nil {
		last := p.last
		p.mu.Unlock()
		return last, nil
	}
	p.mu.Unlock()
	global, err := p.Presence.Sync(ctx, local)
	if err == nil {
		p.mu.Lock()
		p.last = global
		p.mu.Unlock()
	}
	return global, err
}

func (p *heldPresence) hold(held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = held
}

// publishedCount returns how many users of room the hub has published.
func (p *heldPresence) publishedCount(room string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.published[room])
}

// localIs reports whether the last local users of room given to Sync are
// want.
func (p *heldPresence) localIs(room string, want []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Equal(p.local[room], want)
}

// presenceList is a client's list of the present users of one room, kept
// as docs/PROTOCOL.md §8 says (and web/static/chatstream-client.js does).
type presenceList struct {
	users map[string]bool
	count int
}

// apply applies a presence frame: one with users replaces the list, one
// without removes left and adds joined.
func (l *presenceList) apply(t *testing.T, f wstest.Frame) {
	t.Helper()
	var fields struct {
		Users *[]string `json:"users"`
	}
	if err := json.Unmarshal([]byte(f.Raw), &fields); err != nil {
		t.Fatal(err)
	}
	if fields.Users != nil {
		l.users = make(map[string]bool)
		for _, u := range *fields.Users {
			l.users[u] = true
		}
	} else {
		for _, u := range f.Left {
			delete(l.users, u)
		}
		for _, u := range f.Joined {
			l.users[u] = true
		}
	}
	l.count = f.Count
}

// roomMember is a connection in a room that discards what it receives: a
// large room needs hundreds, and a wstest.Client's frame buffer is too big
// for that many.
type roomMember struct {
	conn   *websocket.Conn
	joined chan struct{} // closed at the joined frame
	done   chan struct{} // closed when the connection ends
}

// joinMembers connects users and joins them to room, several at a time,
// and closes them in t.Cleanup.
func (h *harness) joinMembers(t *testing.T, room string, users []string) []*roomMember {
	t.Helper()
	const dialers = 8
	members := make([]*roomMember, len(users))
	errs := make([]error, len(users))
	next := make(chan int)
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				members[i], errs[i] = h.joinMember(room, users[i])
			}
		}()
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, m := range members {
		if m != nil {
			t.Cleanup(m.close)
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return members
}

func (h *harness) joinMember(room, user string) (*roomMember, error) {
	u := strings.Replace(h.srv.URL, "http", "ws", 1) + "/ws?user=" + url.QueryEscape(user)
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	m := &roomMember{conn: conn, joined: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		joined := false
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if !joined && bytes.Contains(data, []byte(`"type":"joined"`)) {
				joined = true
				close(m.joined)
			}
		}
	}()
	if err := conn.WriteJSON(map[string]any{"type": "join", "room": room, "history": 0}); err != nil {
		m.close()
		return nil, err
	}
	select {
	case <-m.joined:
		return m, nil
	case <-time.After(wait):
		m.close()
		return nil, fmt.Errorf("%s: no joined frame within %v", user, wait)
	}
}

// close ends the connection with a normal close and waits for its reader.
func (m *roomMember) close() {
	_ = m.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)) // best effort
	_ = m.conn.Close()                                                                                                                           // closing twice is harmless
	<-m.done
}

func (l *presenceList) sorted() []string {
	return slices.Sorted(maps.Keys(l.users))
}

// TestPresenceCompleteAfterShrink: a member who joined a room of more than
// MaxPresenceList users got only the first ones in its snapshot; once the
// room shrinks to MaxPresenceList or fewer, its list holds exactly the
// present users, whether the room crosses the cap in one presence round or
// several.
func TestPresenceCompleteAfterShrink(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// present users join before joiner; the first leave of them
		// (sorted) leave after it.
		present, leave int
		joiner         string
		// together makes the joiner's arrival and every leave reach the
		// members in one presence round.
		together bool
	}{
		{name: "150 present, 60 leave over several rounds", present: 150, leave: 60, joiner: "zzlate"},
		{name: "150 present, 60 leave in one round", present: 150, leave: 60, joiner: "zzlate", together: true},
		// The joiner's snapshot of 100 users and itself lacks the last
		// name, u099; the room then holds 100 users again.
		{name: "100 present, the joiner sorted first, 1 leaves in the same round", present: 100, leave: 1, joiner: "aaa", together: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const room = "big"
			h := start(t, ws.Config{})
			pres := &heldPresence{Presence: h.backend.NewPresence("test-instance", 0)}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go h.hub.RunPresence(ctx, pres, 20*time.Millisecond)

			names := make([]string, tc.present)
			for i := range names {
				names[i] = fmt.Sprintf("u%03d", i)
			}
			members := h.joinMembers(t, room, names)
			waitFor(t, "every user published", func() bool { return pres.publishedCount(room) == tc.present })
			pres.hold(tc.together)
			j := h.dial(t, tc.joiner)
			join(t, j, room, 0)
			snap, err := j.Await(ws.TypePresence, wait)
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Users) != ws.MaxPresenceList || snap.Count != tc.present+1 {
				t.Fatalf("got snapshot of %d users, count %d, want %d users, count %d (a capped snapshot)",
					len(snap.Users), snap.Count, ws.MaxPresenceList, tc.present+1)
			}
			var list presenceList
			list.apply(t, snap)

			for _, m := range members[:tc.leave] {
				m.close()
			}
			want := slices.Sorted(slices.Values(append(slices.Clone(names[tc.leave:]), tc.joiner)))
			if tc.together {
				waitFor(t, "the hub to lose the users who left", func() bool { return pres.localIs(room, want) })
				pres.hold(false)
			}

			for list.count != len(want) {
				f, err := j.AwaitFunc(func(f wstest.Frame) bool { return f.Type == ws.TypePresence }, wait)
				if err != nil {
					t.Fatalf("got count %d, want %d: %v", list.count, len(want), err)
				}
				list.apply(t, f)
				if list.count <= ws.MaxPresenceList && len(list.users) != list.count {
					t.Fatalf("after %s: got %d users in the list, want count %d", f.Raw, len(list.users), list.count)
				}
			}
			if got := list.sorted(); !slices.Equal(got, want) {
				t.Fatalf("got list of %d users %v, want the %d present %v", len(got), got, len(want), want)
			}
		})
	}
}
