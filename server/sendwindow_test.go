package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// TestSendWindow: while the store is stalled (Redis paused), a connection
// goes on reading its sends until MaxInFlightSends of them wait in the
// pipeline, and then stops reading (the one read after them waits for an
// answer). Every send is acked once the store answers, in the order sent,
// and stored in that order.
func TestSendWindow(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("pauses Redis: needs a private redis-server")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: log, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in := testserver.Start(t, server.Config{
		Backend: backend.Redis(b, log), Logger: log,
		WS: ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
	})
	c, err := wstest.Dial(in.URL(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Join("lobby", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Await("joined", wait); err != nil {
		t.Fatal(err)
	}
	sendsRead := func() float64 { return float64(in.Hub().Stats().FramesReceived["send"]) }

	const window, total = ws.DefaultMaxInFlightSends, ws.DefaultMaxInFlightSends + 8
	rs.Pause()
	resumed := false
	defer func() {
		if !resumed {
			rs.Resume()
		}
	}()
	for i := range total {
		if err := c.Say("lobby", fmt.Sprint("m", i), fmt.Sprint("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The server reads ahead: the window's sends and the one that waits
	// for a slot.
	time.Sleep(300 * time.Millisecond)
	read := sendsRead()
	if read < window+1 {
		t.Fatalf("with the store stalled, %v sends were read, want %d (the window and one waiting for a slot)", read, window+1)
	}
	// ... and no further than one past the sends answered (a store that
	// times out answers unavailable and frees a slot).
	time.Sleep(200 * time.Millisecond)
	var answers []wstest.Frame
	for {
		f, err := c.Next(50 * time.Millisecond)
		if err != nil {
			break
		}
		if f.Type == "ack" || f.Type == "error" {
			answers = append(answers, f)
		}
	}
	if limit := float64(window + 1 + len(answers)); read > limit {
		t.Fatalf("%v sends were read with %d answered, want at most %v", read, len(answers), limit)
	}
	rs.Resume()
	resumed = true

	// Every send is answered once, in the order sent: acked, or refused as
	// unavailable if its append timed out during the pause.
	acked := map[string]bool{}
	for i := range total {
		var f wstest.Frame
		if i < len(answers) {
			f = answers[i]
		} else if f, err = c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" || f.Type == "error" }, wait); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if want := fmt.Sprint("s", i); f.Ref != want {
			t.Fatalf("answer %d is for %q, want %q: answers out of order", i, f.Ref, want)
		}
		switch {
		case f.Type == "ack":
			acked[f.Ref] = true
		case f.Code != pipeline.CodeUnavailable:
			t.Fatalf("send %s: got %s %s, want ack or unavailable", f.Ref, f.Type, f.Code)
		}
	}
	if len(acked) < window {
		t.Fatalf("%d sends acked, want at least the %d sent after the store timed out or resumed", len(acked), window)
	}
	page, err := b.History(context.Background(), "lobby", pipeline.HistoryQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	// The acked sends are stored once each, in the order sent.
	last := -1
	for _, m := range page.Messages {
		var i int
		if _, err := fmt.Sscanf(m.Ref, "s%d", &i); err != nil || !acked[m.Ref] || i <= last {
			t.Fatalf("stored refs out of order or not acked: %q after s%d (acked %v)", m.Ref, last, acked)
		}
		last = i
	}
	if len(page.Messages) != len(acked) {
		t.Fatalf("room holds %d messages, want the %d acked", len(page.Messages), len(acked))
	}
}
