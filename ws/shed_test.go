package ws_test

import (
	"sync/atomic"
	"testing"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/ws"
)

// everyOther sheds every second send it is asked about.
type everyOther struct{ n atomic.Int64 }

func (s *everyOther) Shed() bool { return s.n.Add(1)%2 == 0 }

// TestShedSends: a send the Shedder sheds is answered at once with
// unavailable and a retry hint, in its place among the other answers, and
// is neither stored nor delivered; the others are stored as usual.
func TestShedSends(t *testing.T) {
	h := start(t, ws.Config{Shedder: &everyOther{}})
	c := h.dial(t, "alice")
	join(t, c, "lobby", 0)
	refs := []string{"r1", "r2", "r3", "r4"}
	for _, ref := range refs {
		if err := c.Say("lobby", "text "+ref, ref); err != nil {
			t.Fatal(err)
		}
	}
	var answers []wstest.Frame
	var delivered []string
	for len(answers) < len(refs) {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatalf("after %d answers: %v", len(answers), err)
		}
		switch f.Type {
		case "ack", "error":
			answers = append(answers, f)
		case "message":
			delivered = append(delivered, f.Ref)
		}
	}
	for i, f := range answers {
		if f.Ref != refs[i] {
			t.Fatalf("answer %d is for %q, want %q (answers keep the frames' order)", i, f.Ref, refs[i])
		}
		shed := i%2 == 1
		switch {
		case shed && (f.Type != "error" || f.Code != "unavailable" || f.Retry <= 0):
			t.Errorf("shed send %s answered %s, want unavailable with retry_after_ms", f.Ref, f.Raw)
		case !shed && f.Type != "ack":
			t.Errorf("send %s answered %s, want ack", f.Ref, f.Raw)
		}
	}
	bob := h.dial(t, "bob")
	joined := join(t, bob, "lobby", 10)
	var stored []string
	for _, m := range joined.History {
		stored = append(stored, m.Ref)
	}
	if len(stored) != 2 || stored[0] != "r1" || stored[1] != "r3" {
		t.Fatalf("history holds %v, want [r1 r3]", stored)
	}
	for len(delivered) < 2 {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatalf("delivered %v: %v", delivered, err)
		}
		if f.Type == "message" {
			delivered = append(delivered, f.Ref)
		}
	}
	if len(delivered) != 2 || delivered[0] != "r1" || delivered[1] != "r3" {
		t.Fatalf("delivered %v, want [r1 r3]", delivered)
	}
}
