package ws_test

import (
	"testing"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/ws"
)

// TestJoinEpochAndReset: joined carries the room's epoch; a resume in the
// room's epoch continues after since, while a resume from another epoch,
// or from a since beyond the room's newest message (the room's data was
// lost), gets reset:true and the room's current history.
func TestJoinEpochAndReset(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	a := h.dial(t, "alice")
	first := join(t, a, "lobby", 0)
	say(t, a, "lobby", "one", "r1")
	two := say(t, a, "lobby", "two", "r2")
	resume := func(t *testing.T, since, epoch string) wstest.Frame {
		t.Helper()
		c := h.dial(t, "bob")
		f := map[string]any{"type": "join", "room": "lobby", "since": since}
		if epoch != "" {
			f["epoch"] = epoch
		}
		if err := c.Send(f); err != nil {
			t.Fatal(err)
		}
		j, err := c.Await("joined", wait)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	j := join(t, h.dial(t, "carol"), "lobby", 10)
	if j.Epoch == "" || j.Reset {
		t.Fatalf("joined = %s, want an epoch and no reset", j.Raw)
	}
	epoch := j.Epoch
	if first.Epoch != "" && first.Epoch != epoch {
		t.Fatalf("epoch changed from %q to %q without a loss", first.Epoch, epoch)
	}
	cases := []struct {
		name         string
		since, epoch string
		reset        bool
		texts        []string
	}{
		{"same epoch", j.History[0].Seq, epoch, false, []string{"two"}},
		{"no epoch, since within the room", j.History[0].Seq, "", false, []string{"two"}},
		{"up to date", two.Seq, epoch, false, nil},
		{"another epoch", two.Seq, "lost-epoch", true, []string{"one", "two"}},
		{"since beyond the newest", "99999999999999-0", "", true, []string{"one", "two"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := resume(t, tc.since, tc.epoch)
			var texts []string
			for _, m := range got.History {
				texts = append(texts, m.Text)
			}
			if got.Reset != tc.reset || got.Epoch != epoch || len(texts) != len(tc.texts) || (len(texts) > 0 && texts[len(texts)-1] != tc.texts[len(tc.texts)-1]) {
				t.Fatalf("joined = %s; want reset %v, epoch %s, texts %v", got.Raw, tc.reset, epoch, tc.texts)
			}
		})
	}
}
