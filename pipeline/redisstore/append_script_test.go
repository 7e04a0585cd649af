package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
)

// TestAppendScriptRoomsComeBack: the messages of two buses and three rooms,
// interleaved (build groups them, but the script must not depend on it),
// are stored as grouped ones are: each room in order under its bus's IDs,
// each entry's metadata naming its seq and its room's epoch, each bus's
// pushes naming the entry before, and a send repeated after its room came
// back twice answered as a duplicate. A bus that comes back takes up its
// IDs and its pushes' prev where the call left it, even when the caller's
// last ID there is above what it holds (its newest entries were lost): each
// bus's IDs are consecutive, a duplicate using none, and no XADD is refused.
func TestAppendScriptRoomsComeBack(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const suffix = ":push"
	p := srv.Prefix + ":comeback:"
	buses := []string{p + "bus1", p + "bus2"}
	rooms := []string{p + "room1", p + "room2", p + "room3"}
	roomBus := []int{1, 2, 1}
	msgs := []scriptMsg{{1, "a"}, {2, "b"}, {3, ""}, {1, ""}, {2, "c"}, {3, "d"}, {1, "a"}, {1, ""}, {2, ""}}
	const dup, original = 6, 0
	// Bus 1 stands and holds 1-1; its caller last stored 2-0, since lost.
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: buses[0], ID: "1-1", Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, buses[0]+":epoch", "eb", 0).Err(); err != nil {
		t.Fatal(err)
	}
	keys, args, uuids := scriptArgs(p, suffix, buses, []string{"2-0", ""}, rooms, roomBus, msgs)

	ps := c.SSubscribe(ctx, buses[0]+suffix, buses[1]+suffix)
	defer func() { _ = ps.Close() }()
	for range buses {
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if srv.Private() {
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Eval(ctx, appendLua, keys, args...).StringSlice()
	if err != nil || len(res) != len(rooms)+len(msgs) {
		t.Fatalf("script replied %q, %v; want %d entries", res, err, len(rooms)+len(msgs))
	}
	if srv.Private() {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil || !strings.Contains(info, "cmdstat_xadd:") {
			t.Fatalf("command statistics %q, %v", info, err)
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if strings.HasPrefix(line, "cmdstat_xadd:") && !strings.HasSuffix(line, ",failed_calls=0") {
				t.Errorf("XADDs: %s; want none refused", line)
			}
		}
	}
	epochs, seqs := res[:len(rooms)], res[len(rooms):]
	for r, e := range epochs {
		if want := "e1." + strconv.Itoa(r+1); e != want {
			t.Fatalf("room %d's epoch %q, want %q", r+1, e, want)
		}
	}
	if want := "=" + seqs[original] + " " + uuids[original]; seqs[dup] != want {
		t.Fatalf("repeated send: %q, want %q", seqs[dup], want)
	}

	// What each stream must hold, in order: the messages' indexes.
	want := map[string][]int{}
	for i, m := range msgs {
		if i == dup {
			continue
		}
		if _, err := pipeline.ParseSeq(seqs[i]); err != nil {
			t.Fatalf("message %d: reply %q, want its seq", i, seqs[i])
		}
		want[rooms[m.room-1]] = append(want[rooms[m.room-1]], i)
		bus := buses[roomBus[m.room-1]-1]
		want[bus] = append(want[bus], i)
	}
	for stream, idx := range want {
		xs, err := c.XRange(ctx, stream, "(1-1", "+").Result()
		if err != nil || len(xs) != len(idx) {
			t.Fatalf("%s holds %v, %v; want messages %v", stream, xs, err, idx)
		}
		if stream == buses[0] || stream == buses[1] {
			first, _ := pipeline.ParseSeq(xs[0].ID)
			for j, x := range xs {
				if want := (pipeline.Seq{MS: first.MS, N: uint64(j)}).String(); x.ID != want {
					t.Fatalf("%s's entry %d is %s, want %s (a call's IDs in a bus are consecutive)", stream, j, x.ID, want)
				}
			}
		}
		for j, x := range xs {
			i := idx[j]
			m, ok := decodeParts(x.Values["_watermill_message_uuid"].(string), x.Values["payload"].(string), x.Values["metadata"].(string))
			if !ok || x.ID != seqs[i] || m.UUID != uuids[i] || string(m.Payload) != fmt.Sprint("text ", i) ||
				m.Metadata.Get("seq") != seqs[i] || m.Metadata.Get("epoch") != epochs[msgs[i].room-1] {
				t.Fatalf("%s entry %d: %s %v (%v); want message %d, seq %s, epoch %s", stream, j, x.ID, x.Values, ok, i, seqs[i], epochs[msgs[i].room-1])
			}
		}
	}

	// Each bus's pushes follow on from each other, in its order.
	prev := map[string]string{buses[0] + suffix: "2-0", buses[1] + suffix: "0-0"}
	next := map[string][]int{buses[0] + suffix: want[buses[0]], buses[1] + suffix: want[buses[1]]}
	for range len(want[buses[0]]) + len(want[buses[1]]) {
		var got string
		var ch string
		select {
		case m := <-ps.Channel():
			got, ch = m.Payload, m.Channel
		case <-ctx.Done():
			t.Fatal("pushes missing")
		}
		x, ok := parsePush(got)
		if !ok || len(next[ch]) == 0 {
			t.Fatalf("push %q on %s, want one of %v", got, ch, next[ch])
		}
		i := next[ch][0]
		if x.prev != prev[ch] || x.id != seqs[i] || x.uuid != uuids[i] {
			t.Fatalf("push on %s: prev %s, seq %s, uuid %s; want prev %s, message %d (%s, %s)", ch, x.prev, x.id, x.uuid, prev[ch], i, seqs[i], uuids[i])
		}
		prev[ch], next[ch] = x.id, next[ch][1:]
	}
}

// TestAppendScriptFailuresAreOwn: a bus, a room's epoch or a send record
// whose key holds something else fails the messages that need it, each
// answered with the error, and the others of the call are stored. A send
// record that is not the script's (a msgpack array of the room's epoch
// alone) fails nothing: the send is stored and the record rewritten.
func TestAppendScriptFailuresAreOwn(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := context.Background()
	p := srv.Prefix + ":failures:"
	buses := []string{p + "bus1", p + "bus2"}
	rooms := []string{p + "room1", p + "room2", p + "room3"}
	roomBus := []int{1, 2, 2}
	msgs := []scriptMsg{{1, "a"}, {2, "b"}, {2, "c"}, {3, ""}, {2, ""}, {2, "e"}}
	keys, args, _ := scriptArgs(p, ":push", buses, []string{"", ""}, rooms, roomBus, msgs)
	for _, k := range []string{
		buses[0],            // bus 1, so room 1: message 0
		rooms[2] + ":epoch", // room 3: message 3
		p + "sent:2:c",      // message 2's send record
	} {
		if err := c.HSet(ctx, k, "not", "this").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, p+"sent:2:e", "\x91\xa4e1.2", 0).Err(); err != nil { // room 2's fresh epoch
		t.Fatal(err)
	}
	// Room 3 stands, so its epoch is read (a room that does not gets a
	// fresh epoch in place of whatever its key held).
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: rooms[2], ID: "1-1", Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Eval(ctx, appendLua, keys, args...).StringSlice()
	if err != nil || len(res) != len(rooms)+len(msgs) {
		t.Fatalf("script replied %q, %v; want %d entries", res, err, len(rooms)+len(msgs))
	}
	replies := res[len(rooms):]
	for i, r := range replies {
		failed := i == 0 || i == 2 || i == 3
		if failed != strings.HasPrefix(r, "!WRONGTYPE") {
			t.Fatalf("message %d: %q; want failed %v", i, r, failed)
		}
		if !failed {
			if _, err := pipeline.ParseSeq(r); err != nil {
				t.Fatalf("message %d: %q; want its seq", i, r)
			}
		}
	}
	if xs, err := c.XRange(ctx, buses[1], "-", "+").Result(); err != nil || len(xs) != 3 || xs[0].ID != replies[1] || xs[1].ID != replies[4] || xs[2].ID != replies[5] {
		t.Fatalf("bus 2 holds %v, %v; want messages 1, 4 and 5", xs, err)
	}
	if rec, err := c.Get(ctx, p+"sent:2:e").Result(); err != nil || !strings.HasPrefix(rec, "\x93\xa4e1.2") || !strings.HasSuffix(rec, replies[5]) {
		t.Fatalf("message 5's send record %q, %v; want {epoch, uuid, seq}", rec, err)
	}
	// Room 1 is left as it was: its bus failed before it was read.
	if n, err := c.Exists(ctx, rooms[0], rooms[0]+":epoch").Result(); err != nil || n != 0 || res[0] != "" {
		t.Fatalf("room 1: %d keys (%v), epoch %q; want none, and none read", n, err, res[0])
	}
	if n, err := c.XLen(ctx, rooms[2]).Result(); err != nil || n != 1 {
		t.Fatalf("room 3 holds %d entries (%v), want only the one it had", n, err)
	}
}

// scriptMsg is a message of a script call made by hand: its room's number
// (1-based) and its ref.
type scriptMsg struct {
	room int
	ref  string
}

// scriptArgs lays out an append.lua call (see its header) of msgs, with keys
// named after p: room r's bus is roomBus[r-1] (1-based); the caller's last
// ID in bus b is last[b-1]; each entry's metadata holds only what the script
// adds. It returns the keys, the arguments, and the messages' UUIDs.
func scriptArgs(p, suffix string, buses, last, rooms []string, roomBus []int, msgs []scriptMsg) (keys []string, args []any, uuids []string) {
	for _, b := range buses {
		keys = append(keys, b, b+":epoch")
	}
	for _, r := range rooms {
		keys = append(keys, r, r+":epoch")
	}
	args = []any{10000, 1000000, 604800000, 600000, "e1", len(buses), len(rooms), suffix}
	for _, b := range roomBus {
		args = append(args, b)
	}
	for _, l := range last {
		args = append(args, l)
	}
	for i, m := range msgs {
		k := 0
		if m.ref != "" {
			keys = append(keys, fmt.Sprintf("%ssent:%d:%s", p, m.room, m.ref))
			k = len(keys) - 2*len(buses) - 2*len(rooms)
		}
		uuids = append(uuids, uuid.NewString())
		// A metadata map with nothing but the two entries the script adds.
		args = append(args, m.room, k, uuids[i], fmt.Sprint("text ", i), "\x82")
	}
	return keys, args, uuids
}
