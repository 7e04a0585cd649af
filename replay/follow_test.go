package replay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/replay"
)

// follower runs Messages with Follow in the background and hands every
// message to a channel.
type follower struct {
	got    chan replay.Entry
	cancel context.CancelFunc
	done   chan error
}

func startFollow(t *testing.T, r *replay.Reader, q replay.Query) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{got: make(chan replay.Entry, 100), cancel: cancel, done: make(chan error, 1)}
	q.Follow = true
	go func() {
		f.done <- r.Messages(ctx, q, func(e replay.Entry) error {
			select {
			case f.got <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

// next returns the next n messages as "room/user/text".
func (f *follower) next(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case e := <-f.got:
			out = append(out, e.Room+"/"+e.User+"/"+e.Text)
		case err := <-f.done:
			t.Fatalf("follow ended after %q: %v", out, err)
		case <-timeout:
			t.Fatalf("got %q, want %d messages", out, n)
		}
	}
	return out
}

// stop cancels the follow and checks that it ends without error and
// without more messages.
func (f *follower) stop(t *testing.T) {
	t.Helper()
	f.cancel()
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("follow ended with %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("follow did not end after cancel")
	}
	select {
	case e := <-f.got:
		t.Fatalf("extra message %+v", e)
	default:
	}
}

// TestFollow: a follow prints the stored messages, then the new ones as
// they are appended, filtered, without duplicates, until cancelled.
func TestFollow(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	t.Run("room", func(t *testing.T) {
		b := newBackend(t, srv, "room")
		seed(t, b, "lobby", "alice", "before 1", time.Time{})
		seed(t, b, "lobby", "bob", "before 2", time.Time{})
		r := replay.NewReader(b, replay.Config{Block: 100 * time.Millisecond, Logger: quiet})
		f := startFollow(t, r, replay.Query{Room: "lobby", Filter: replay.Filter{User: "alice"}})
		if got := fmt.Sprint(f.next(t, 1)); got != "[lobby/alice/before 1]" {
			t.Fatalf("stored part = %s", got)
		}
		seed(t, b, "lobby", "bob", "after skipped", time.Time{})
		seed(t, b, "other", "alice", "other room", time.Time{})
		seed(t, b, "lobby", "alice", "after 1", time.Time{})
		seed(t, b, "lobby", "alice", "after 2", time.Time{})
		if got := fmt.Sprint(f.next(t, 2)); got != "[lobby/alice/after 1 lobby/alice/after 2]" {
			t.Fatalf("followed = %s", got)
		}
		f.stop(t)
	})
	t.Run("all rooms", func(t *testing.T) {
		b := newBackend(t, srv, "all")
		// Rooms in different partitions, so the follow reads several buses.
		rooms := roomsInPartitions(t, 4, 2)
		seed(t, b, rooms[0], "alice", "stored", time.Time{})
		r := replay.NewReader(b, replay.Config{Block: 100 * time.Millisecond, Logger: quiet})
		f := startFollow(t, r, replay.Query{AllRooms: true})
		if got := fmt.Sprint(f.next(t, 1)); got != fmt.Sprintf("[%s/alice/stored]", rooms[0]) {
			t.Fatalf("stored part = %s", got)
		}
		seed(t, b, rooms[1], "bob", "new room", time.Time{})
		seed(t, b, rooms[0], "carol", "again", time.Time{})
		want := fmt.Sprintf("[%s/bob/new room %s/carol/again]", rooms[1], rooms[0])
		if got := fmt.Sprint(f.next(t, 2)); got != want {
			t.Fatalf("followed = %s, want %s", got, want)
		}
		f.stop(t)
	})
}

// roomsInPartitions returns n room names in n different partitions of p.
func roomsInPartitions(t *testing.T, p, n int) []string {
	t.Helper()
	seen := map[int]bool{}
	var out []string
	for i := 0; len(out) < n && i < 1000; i++ {
		room := fmt.Sprintf("room%d", i)
		if part := pipeline.PartitionOf(room, p); !seen[part] {
			seen[part] = true
			out = append(out, room)
		}
	}
	if len(out) < n {
		t.Fatalf("found only %d rooms in distinct partitions", len(out))
	}
	return out
}
