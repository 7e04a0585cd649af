package loadgen_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/loadgen"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// startServer runs a memory-backend server with the per-connection and
// per-address limits lifted, as docs/PERFORMANCE.md starts it.
func startServer(t *testing.T) *testserver.Instance {
	t.Helper()
	return testserver.Start(t, server.Config{
		WS:        ws.Config{FrameRate: 100_000, FrameBurst: 100_000},
		Admission: admission.Config{MaxConnsPerIP: 20_000, HandshakeBurst: 20_000},
	})
}

// run runs cfg against srv and fails the test on an error.
func run(t *testing.T, cfg loadgen.Config) loadgen.Result {
	t.Helper()
	res, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	return res
}

// checkComplete checks what every healthy run shows: every measured send
// acked, every acked message delivered to every receiver of its room once,
// latencies measured and in order.
func checkComplete(t *testing.T, res loadgen.Result, receiversPerRoom int64) {
	t.Helper()
	if res.Sent == 0 || res.Acked != res.Sent || res.Unanswered != 0 || res.WriteErrors != 0 {
		t.Errorf("sent/acked/unanswered/write errors = %d/%d/%d/%d, want every send acked", res.Sent, res.Acked, res.Unanswered, res.WriteErrors)
	}
	for code, n := range res.Refused {
		if n != 0 {
			t.Errorf("refused %s = %d, want 0", code, n)
		}
	}
	if want := res.Acked * receiversPerRoom; res.Expected != want || res.Deliveries != want {
		t.Errorf("deliveries = %d, expected = %d, want both %d", res.Deliveries, res.Expected, want)
	}
	if res.LostDeliveries != 0 || res.LostMessages != 0 || res.Duplicates != 0 || res.Foreign != 0 {
		t.Errorf("lost %d (%d messages), duplicates %d, foreign %d, want none", res.LostDeliveries, res.LostMessages, res.Duplicates, res.Foreign)
	}
	if !res.Drained || len(res.Disconnects) != 0 || res.Interrupted {
		t.Errorf("drained %v, disconnects %v, interrupted %v; want drained, none, false", res.Drained, res.Disconnects, res.Interrupted)
	}
	for name, l := range map[string]loadgen.Latency{"delivery": res.DeliveryLatency, "ack": res.AckLatency} {
		if l.P50 <= 0 || l.P90 < l.P50 || l.P99 < l.P90 || l.Max < l.P99 {
			t.Errorf("%s latency out of order: %+v", name, l)
		}
	}
	if res.DeliveryLatency.Count != res.Deliveries || res.AckLatency.Count != res.Acked {
		t.Errorf("latency counts %d/%d, want deliveries/acks %d/%d", res.DeliveryLatency.Count, res.AckLatency.Count, res.Deliveries, res.Acked)
	}
}

// TestRunMeasuresDeliveries: a small bounded run against a real gateway
// delivers every acked message to every receiver of its room, measures
// both latencies and reports the server's CPU and memory (the server runs
// in the test process, so the test's own pid is the server's).
func TestRunMeasuresDeliveries(t *testing.T) {
	srv := startServer(t)
	res := run(t, loadgen.Config{
		URLs: []string{srv.URL()}, Conns: 20, Rooms: 2, Senders: 4, Rate: 200,
		Warmup: 200 * time.Millisecond, Duration: time.Second, Drain: 5 * time.Second,
		ServerPIDs: []int{os.Getpid()},
	})
	checkComplete(t, res, 10)
	// 200 msg/s for 1 s; the schedule allows one message either way.
	if res.Sent < 199 || res.Sent > 201 || res.WarmupSent < 39 || res.WarmupSent > 41 {
		t.Errorf("sent %d after %d warm-up, want about 200 after 40", res.Sent, res.WarmupSent)
	}
	if res.DeliveriesPerSecond < 200 || res.DeliveriesPerSecond > 2100 {
		t.Errorf("deliveries/s = %.0f, want about 2000 (less on a busy machine, never more)", res.DeliveriesPerSecond)
	}
	if len(res.Servers) != 1 || res.Servers[0].PID != os.Getpid() || res.Servers[0].CPUPercent <= 0 ||
		res.Servers[0].RSSBefore <= 0 || res.Servers[0].RSSAfter <= 0 {
		t.Errorf("servers = %+v, want this process with CPU and RSS", res.Servers)
	}
	if res.GeneratorCPUPercent <= 0 {
		t.Errorf("generator CPU = %v%%, want some", res.GeneratorCPUPercent)
	}
}

// TestRunScaledScenarios runs tiny versions of the standard scenarios
// through a real gateway: rooms with one receiver (P), senders in several
// rooms each (R), and idle connections (I).
func TestRunScaledScenarios(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scale   float64
		perRoom int64
	}{
		{"P", 0.01, 1},  // 1 room, 1 receiver, 1 sender, 100 msg/s
		{"R", 0.01, 10}, // 5 rooms of 10 receivers, 1 sender in all 5, 10 msg/s
		{"C", 0.05, 5},  // 1 room of 5 receivers, 1 sender, 40 msg/s
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			s, err := loadgen.LookupScenario(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.Config([]string{srv.URL()}, tc.scale)
			cfg.Warmup, cfg.Duration = 100*time.Millisecond, 600*time.Millisecond
			res := run(t, cfg)
			checkComplete(t, res, tc.perRoom)
		})
	}
	t.Run("I", func(t *testing.T) {
		srv := startServer(t)
		s, err := loadgen.LookupScenario("I")
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.Config([]string{srv.URL()}, 0.01) // 100 connections in 10 rooms
		cfg.Duration = 200 * time.Millisecond
		cfg.ServerPIDs = []int{os.Getpid()}
		res := run(t, cfg)
		if res.Connections != 100 || res.Sent != 0 || res.Deliveries != 0 || len(res.Disconnects) != 0 {
			t.Errorf("connections %d, sent %d, deliveries %d, disconnects %v; want 100, 0, 0, none",
				res.Connections, res.Sent, res.Deliveries, res.Disconnects)
		}
		if len(res.Servers) != 1 {
			t.Errorf("servers = %+v, want this process", res.Servers)
		}
	})
}

// TestRunBoundedByMaxMessages: MaxMessages caps the sends, warm-up
// included, however long the phases.
func TestRunBoundedByMaxMessages(t *testing.T) {
	srv := startServer(t)
	res := run(t, loadgen.Config{
		URLs: []string{srv.URL()}, Conns: 2, Senders: 1, Rate: 500,
		Warmup: 20 * time.Millisecond, Duration: 5 * time.Second, MaxMessages: 50,
	})
	if got := res.WarmupSent + res.Sent; got != 50 {
		t.Errorf("sent %d + %d warm-up = %d, want 50", res.Sent, res.WarmupSent, got)
	}
	checkComplete(t, res, 2)
}

// TestRunCountsRefusals: a sender faster than the server's frame rate has
// frames discarded; each second's first discard is answered rate_limited,
// the discarded sends stay unanswered, and the drain ends at its bound.
func TestRunCountsRefusals(t *testing.T) {
	srv := testserver.Start(t, server.Config{WS: ws.Config{FrameRate: 20, FrameBurst: 5}})
	res := run(t, loadgen.Config{
		URLs: []string{srv.URL()}, Conns: 1, Senders: 1, Rate: 60,
		Duration: 500 * time.Millisecond, Drain: 300 * time.Millisecond,
	})
	if res.Refused["rate_limited"] == 0 || res.Unanswered == 0 || res.Drained {
		t.Errorf("rate_limited %d, unanswered %d, drained %v; want some, some, false", res.Refused["rate_limited"], res.Unanswered, res.Drained)
	}
	if res.Acked+res.Unanswered != res.Sent || res.LostDeliveries != 0 {
		t.Errorf("acked %d + unanswered %d != sent %d, or lost %d", res.Acked, res.Unanswered, res.Sent, res.LostDeliveries)
	}
}

// TestRunRefusesNonLoopback: only loopback addresses are loaded; nothing
// is dialled otherwise.
func TestRunRefusesNonLoopback(t *testing.T) {
	for _, url := range []string{
		"http://10.0.0.1:8080",
		"http://127.example.com:8080", // looks like 127.x, resolves anywhere
		"http://example.com",
		"http://0.0.0.0:8080",
		"http://[2001:db8::1]:8080",
	} {
		t.Run(url, func(t *testing.T) {
			_, err := loadgen.Run(context.Background(), loadgen.Config{URLs: []string{"http://127.0.0.1:1", url}, Senders: 1})
			if !errors.Is(err, loadgen.ErrNotLoopback) {
				t.Errorf("Run = %v, want ErrNotLoopback", err)
			}
		})
	}
}

// TestValidate: each bound is enforced, after defaults.
func TestValidate(t *testing.T) {
	ok := loadgen.Config{URLs: []string{"http://127.0.0.1:8080"}, Senders: 1}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*loadgen.Config)
		want   string
	}{
		{"no url", func(c *loadgen.Config) { c.URLs = nil }, "no URL"},
		{"bad scheme", func(c *loadgen.Config) { c.URLs = []string{"ftp://127.0.0.1"} }, "scheme"},
		{"fewer receivers than rooms", func(c *loadgen.Config) { c.Rooms = 200 }, "one receiver per room"},
		{"too many rooms per sender", func(c *loadgen.Config) { c.Rooms, c.Conns = 101, 101 }, "more than 100 rooms"},
		{"rate without senders", func(c *loadgen.Config) { c.Senders = 0 }, "no senders"},
		{"zero rate", func(c *loadgen.Config) { c.Rate = 0 }, "rate"},
		{"duration too long", func(c *loadgen.Config) { c.Duration = 11 * time.Minute }, "duration"},
		{"warm-up too long", func(c *loadgen.Config) { c.Warmup = 2 * time.Minute }, "warm-up"},
		{"drain too long", func(c *loadgen.Config) { c.Drain = 2 * time.Minute }, "drain"},
		{"too many messages", func(c *loadgen.Config) { c.MaxMessages = loadgen.MaxMessagesLimit + 1 }, "max messages"},
		{"text too small", func(c *loadgen.Config) { c.TextSize = 10 }, "text size"},
		{"too many connections", func(c *loadgen.Config) { c.Conns = loadgen.MaxConnections }, "connections"},
		{"bad pid", func(c *loadgen.Config) { c.ServerPIDs = []int{0} }, "pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.URLs = append([]string(nil), ok.URLs...)
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
}
