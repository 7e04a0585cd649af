package ws_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/ws"
)

// wait is the generous upper bound of every expected event in these tests.
const wait = 5 * time.Second

// harness is a gateway with the memory backend behind an httptest server.
type harness struct {
	srv     *httptest.Server
	gw      *ws.Gateway
	hub     *ws.Hub
	backend *memstore.Backend
	stop    context.CancelFunc
}

// harnessRoomMaxLen is the number of messages the harness keeps per room.
const harnessRoomMaxLen = 20

// start runs a gateway configured by cfg with the memory backend; it is
// stopped by t.Cleanup. Tests and benchmarks share it.
func start(t testing.TB, cfg ws.Config, mods ...pipeline.Moderator) *harness {
	t.Helper()
	return startKeeping(t, harnessRoomMaxLen, cfg, mods...)
}

// startKeeping is start with a memory backend that keeps roomMaxLen
// messages per room.
func startKeeping(t testing.TB, roomMaxLen int, cfg ws.Config, mods ...pipeline.Moderator) *harness {
	t.Helper()
	return startStoring(t, roomMaxLen, cfg, nil, mods...)
}

// startStoring is startKeeping whose pipeline stores through wrap(the
// memory backend), or the backend itself when wrap is nil.
func startStoring(t testing.TB, roomMaxLen int, cfg ws.Config, wrap func(*memstore.Backend) pipeline.Store, mods ...pipeline.Moderator) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Logger = log
	be, err := memstore.New(memstore.Config{RoomMaxLen: roomMaxLen, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var store pipeline.Store = be
	if wrap != nil {
		store = wrap(be)
	}
	hub := ws.NewHub(log, 4096)
	p, err := pipeline.New(pipeline.Config{
		Ingest:   pipeline.IngestConfig{Store: store, DeadLetters: be, Logger: log, Moderators: mods},
		Delivery: pipeline.DeliveryConfig{Feed: be, Deliverer: hub, Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ws.NewGateway(cfg, hub, p, be)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()
	<-p.Running()
	h := &harness{srv: httptest.NewServer(gw), gw: gw, hub: hub, backend: be, stop: cancel}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		_ = gw.Shutdown(sctx) // tests that shut down themselves make this a no-op
		h.srv.Close()
		cancel()
		<-done
		_ = be.Close()
	})
	return h
}

// dial connects user and closes the client in t.Cleanup.
func (h *harness) dial(t *testing.T, user string) *wstest.Client {
	t.Helper()
	c, err := wstest.Dial(h.srv.URL, user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// join joins room with n history messages and returns the joined frame.
func join(t *testing.T, c *wstest.Client, room string, n int) wstest.Frame {
	t.Helper()
	if err := c.Join(room, n); err != nil {
		t.Fatal(err)
	}
	f, err := c.Await("joined", wait)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// say sends text and waits for its ack.
func say(t *testing.T, c *wstest.Client, room, text, ref string) wstest.Frame {
	t.Helper()
	if err := c.Say(room, text, ref); err != nil {
		t.Fatal(err)
	}
	f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, wait)
	if err != nil {
		t.Fatalf("waiting for ack of %q: %v", ref, err)
	}
	if f.Type == "error" {
		t.Fatalf("send %q: got error %s: %s", ref, f.Code, f.Message)
	}
	return f
}

// collect returns the next n message frames of room, failing on timeout.
func collect(t *testing.T, c *wstest.Client, room string, n int) []wstest.Frame {
	t.Helper()
	var out []wstest.Frame
	for len(out) < n {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatalf("got %d of %d messages: %v", len(out), n, err)
		}
		if f.Type == "message" && f.Room == room {
			out = append(out, f)
		}
	}
	return out
}
