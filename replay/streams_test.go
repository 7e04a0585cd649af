package replay_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
	"github.com/chatstream/chatstream/server"
)

// startInstance runs a chatstream server on the backend until the test ends.
func startInstance(t *testing.T, b *redisstore.Backend) *server.Server {
	t.Helper()
	return testserver.Start(t, server.Config{Backend: backend.Redis(b, quiet), Logger: quiet, ReportEvery: 50 * time.Millisecond}).Server
}

// TestStreams: the report's lengths, bounds, limits, and the position and
// lag of a running instance (caught up) and of a recorded one (behind).
func TestStreams(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	b := newBackend(t, rs, "")
	live := startInstance(t, newBackend(t, rs, ""))
	var seqs []string
	for _, text := range []string{"a", "b", "c"} {
		seqs = append(seqs, seed(t, b, "lobby", "alice", text, time.Time{}))
	}
	deadLetter(t, b, "lobby", "eve", "spam", "words")
	part := pipeline.PartitionOf("lobby", 4)
	ctx := context.Background()
	positions := make([]string, 4)
	positions[part] = seqs[0]
	if err := b.RecordInstance(ctx, redisstore.InstanceInfo{
		ID: "stale", Addr: "10.0.0.9:8080", StartedAt: time.Now().Add(-time.Minute), Positions: positions,
	}); err != nil {
		t.Fatal(err)
	}
	r := replay.NewReader(b, replay.Config{Logger: quiet})
	limits := replay.Limits{Room: 100, Bus: 200, Rejected: 300}
	var rep replay.Report
	deadline := time.Now().Add(wait)
	for {
		var err error
		if rep, err = r.Streams(ctx, limits); err != nil {
			t.Fatal(err)
		}
		if pos, ok := positionOf(rep, live.InstanceID(), part); ok && pos.ID == seqs[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s never reported position %s: %+v", live.InstanceID(), seqs[2], rep.Instances)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rep.Prefix != rs.Prefix || rep.Partitions != 4 || rep.Limits != limits || len(rep.Buses) != 4 {
		t.Fatalf("report header = %s %d %+v, %d buses", rep.Prefix, rep.Partitions, rep.Limits, len(rep.Buses))
	}
	bus := rep.Buses[part]
	if !bus.Exists || bus.Length != 3 || bus.EntriesAdded != 3 || bus.FirstID != seqs[0] || bus.LastID != seqs[2] || bus.MaxLen != 200 || bus.MemoryBytes <= 0 {
		t.Fatalf("bus = %+v", bus)
	}
	if len(rep.Rooms) != 1 {
		t.Fatalf("rooms = %+v", rep.Rooms)
	}
	room := rep.Rooms[0]
	if room.Room != "lobby" || room.Key != b.Keys().Room("lobby") || room.Length != 3 || room.FirstID != seqs[0] || room.LastID != seqs[2] || room.MaxLen != 100 || room.LastTS == "" {
		t.Fatalf("room = %+v", room)
	}
	if rj := rep.Rejected; !rj.Exists || rj.Length != 1 || rj.MaxLen != 300 {
		t.Fatalf("rejected = %+v", rj)
	}
	if other := rep.Buses[(part+1)%4]; other.Exists || other.Length != 0 {
		t.Fatalf("unused bus = %+v", other)
	}
	if pos, _ := positionOf(rep, live.InstanceID(), part); pos.Lag != 0 {
		t.Fatalf("live instance = %+v, want lag 0", pos)
	}
	pos, ok := positionOf(rep, "stale", part)
	if !ok || pos.ID != seqs[0] || pos.Lag != 2 || pos.LagCapped || pos.TS == "" {
		t.Fatalf("stale instance = %+v, want position %s lag 2", pos, seqs[0])
	}
}

func positionOf(rep replay.Report, id string, part int) (replay.Position, bool) {
	for _, in := range rep.Instances {
		if in.ID == id && part < len(in.Positions) {
			return in.Positions[part], true
		}
	}
	return replay.Position{}, false
}
