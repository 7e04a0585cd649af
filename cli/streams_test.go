package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// TestStreamsCommand: the text tables and the JSON document show the
// streams, the configured limits and a recorded instance's lag.
func TestStreamsCommand(t *testing.T) {
	t.Parallel()
	f := newToolFixture(t)
	a := f.seed(t, "lobby", "alice", "one", time.Now())
	f.seed(t, "lobby", "alice", "two", time.Now())
	part := pipeline.PartitionOf("lobby", 4)
	positions := make([]string, 4)
	positions[part] = a
	if err := f.b.RecordInstance(context.Background(), redisstore.InstanceInfo{ID: "gw-1", Addr: "10.0.0.1:8080", StartedAt: time.Now(), Positions: positions}); err != nil {
		t.Fatal(err)
	}

	tio, out, _ := bufferIO()
	c := streamsCmd{Conn: f.flags(), Limits: trimFlags{RoomMaxlen: 500, BusMaxlen: 600}, Format: "text"}
	if err := c.run(context.Background(), tio); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.Contains(text, "room 500, bus 600, rejected 10000") {
		t.Errorf("text output lacks the limits:\n%s", text)
	}
	for _, want := range [][]string{
		{f.b.Keys().Room("lobby"), "room", "2", "2", a},
		{f.b.Keys().Bus(part), "bus", "2", "2", a},
		{f.b.Keys().Bus((part + 1) % 4), "bus", "0", "0", "-"},
		{f.b.Keys().Rejected(), "rejected", "0", "0", "-"},
		{"gw-1", "10.0.0.1:8080"},
	} {
		if got := row(text, want[0]); len(got) < len(want) || strings.Join(got[:len(want)], " ") != strings.Join(want, " ") {
			t.Errorf("row %s = %q, want it to start with %q:\n%s", want[0], got, want, text)
		}
	}
	if got := row(text, f.b.Keys().Room("lobby")); got[len(got)-1] != "500" {
		t.Errorf("room row %q, want maxlen 500", got)
	}

	tio, out, _ = bufferIO()
	c.Format = "json"
	if err := c.run(context.Background(), tio); err != nil {
		t.Fatal(err)
	}
	var rep replay.Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rooms) != 1 || rep.Rooms[0].Length != 2 || rep.Buses[part].Length != 2 || rep.Limits.Bus != 600 {
		t.Fatalf("report = %+v", rep)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Positions[part].Lag != 1 || rep.Instances[0].Positions[part].ID != a {
		t.Fatalf("instances = %+v", rep.Instances)
	}
}

// row returns the fields of the first line of text that starts with key.
func row(text, key string) []string {
	for line := range strings.Lines(text) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == key {
			return f
		}
	}
	return nil
}
