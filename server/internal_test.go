package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// metricsSnapshot is one scrape of /metrics, by metric family name.
type metricsSnapshot map[string]*dto.MetricFamily

// scrape reads and parses url's Prometheus text.
func scrape(t *testing.T, url string) metricsSnapshot {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// value returns the value of the series of name whose labels include
// labels (name=value pairs): a counter's or gauge's value, a histogram's
// sample count; -1 when there is no such series.
func (s metricsSnapshot) value(name string, labels ...string) float64 {
	fam := s[name]
	if fam == nil {
		return -1
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	return -1
}

// sum adds every series of name.
func (s metricsSnapshot) sum(name string) float64 {
	var n float64
	for _, m := range s[name].GetMetric() {
		n += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return n
}

// rejectBad is a moderator refusing any text containing "bad".
func rejectBad(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	if strings.Contains(m.Text, "bad") {
		return moderation.Decision{Action: moderation.Reject, Reason: "bad word"}, nil
	}
	return moderation.Decision{Action: moderation.Accept}, nil
}

// TestInternalMetrics runs an instance with its internal listener on each
// backend, drives real WebSocket traffic and checks that every counter
// moved by exactly what the traffic did.
func TestInternalMetrics(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg := server.Config{
				Logger: log, Ops: server.OpsConfig{InternalAddr: "127.0.0.1:0"},
				WS: ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
			}
			if kind == "memory" {
				b, err := backend.Open(backend.Config{Logger: log})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Backend = b
			}
			if kind == "redis" {
				rs := testredis.Start(t)
				b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: log, Timeout: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Backend = backend.Redis(b, log)
			}
			chain, err := moderation.NewChain(log, moderation.Entry{Name: "nobad", Moderator: moderation.Func(rejectBad)})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Moderators, cfg.Ops.Moderation = chain.Moderators(), chain
			srv := testserver.Start(t, cfg)
			checkMetrics(t, srv)
			checkBusLags(t, cfg.Backend)
			s := scrape(t, srv.InternalURL()+"/metrics")
			if kind == "memory" {
				if s.value("chatstream_memory_rooms") != 1 || s.value("chatstream_memory_history_bytes") <= 0 ||
					s.value("chatstream_memory_rooms_forgotten_total", "reason", "max_bytes") != 0 || s.value("chatstream_memory_messages_dropped_total") != 0 {
					t.Errorf("memory metrics: rooms %v, bytes %v, forgotten by max_bytes %v, dropped %v; want 1 room of some bytes, nothing dropped",
						s.value("chatstream_memory_rooms"), s.value("chatstream_memory_history_bytes"),
						s.value("chatstream_memory_rooms_forgotten_total", "reason", "max_bytes"), s.value("chatstream_memory_messages_dropped_total"))
				}
			} else if s["chatstream_memory_rooms"] != nil {
				t.Error("the Redis backend reports chatstream_memory_rooms")
			}
		})
	}
}

func checkMetrics(t *testing.T, srv *testserver.Instance) {
	metricsURL := srv.InternalURL() + "/metrics"
	before := scrape(t, metricsURL)

	const members, messages = 3, 5
	var clients []*wstest.Client
	for i := range members {
		c, err := wstest.Dial(srv.URL(), fmt.Sprintf("u%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Join("metrics", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Await("joined", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	sender := clients[0]
	for i := range messages {
		ref := fmt.Sprintf("r%d", i)
		if err := sender.Say("metrics", "hello "+ref, ref); err != nil {
			t.Fatal(err)
		}
		if _, err := sender.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "ack" && f.Ref == ref }, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		for range messages {
			if _, err := c.Await("message", 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One refused by moderation.
	if err := sender.Say("metrics", "a bad one", "bad"); err != nil {
		t.Fatal(err)
	}
	if f, err := sender.Await("error", 5*time.Second); err != nil || f.Code != "rejected" {
		t.Fatalf("moderated send: %+v, %v; want a rejected error", f, err)
	}
	// One frame that is not of the protocol.
	if err := sender.SendRaw(websocket.TextMessage, []byte(`{"type":"bogus"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := sender.Await("error", 5*time.Second); err != nil || f.Code != ws.CodeBadFrame {
		t.Fatalf("bogus frame: %+v, %v; want a bad_frame error", f, err)
	}

	after := scrape(t, metricsURL)
	moved := func(name string, labels ...string) float64 {
		return after.value(name, labels...) - max(before.value(name, labels...), 0)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"chatstream_messages_stored_total", nil, messages},
		{"chatstream_deliveries_total", nil, members * messages},
		{"chatstream_frames_received_total", []string{"type", "send"}, messages + 1},
		{"chatstream_frames_received_total", []string{"type", "join"}, members},
		{"chatstream_frames_received_total", []string{"type", "invalid"}, 1},
		{"chatstream_frames_received_total", []string{"type", "leave"}, 0},
		{"chatstream_errors_sent_total", []string{"code", "rejected"}, 1},
		{"chatstream_errors_sent_total", []string{"code", "bad_frame"}, 1},
		{"chatstream_ack_seconds", nil, messages + 1},
		{"chatstream_delivery_lag_seconds", nil, messages},
		{"chatstream_messages_refused_total", nil, 1},
		{"chatstream_feed_messages_total", nil, messages},
		{"chatstream_backend_append_seconds", nil, messages},
		{"chatstream_moderation_decisions_total", []string{"moderator", "nobad", "decision", "accepted"}, messages},
		{"chatstream_moderation_decisions_total", []string{"moderator", "nobad", "decision", "rejected"}, 1},
		{"chatstream_backend_errors_total", []string{"op", "append"}, 0},
		{"chatstream_slow_disconnects_total", nil, 0},
		{"chatstream_connections_refused_total", []string{"reason", "max_conns"}, 0},
	}
	for _, c := range checks {
		if got := moved(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := after.value("chatstream_connections"); got != members {
		t.Errorf("chatstream_connections = %v, want %v", got, members)
	}
	if got := after.value("chatstream_rooms"); got != 1 {
		t.Errorf("chatstream_rooms = %v, want 1", got)
	}
	// Watermill's router metrics: every send passed the ingest's handler.
	if got := after.sum("chatstream_watermill_handler_execution_time_seconds") - before.sum("chatstream_watermill_handler_execution_time_seconds"); got != messages+1 {
		t.Errorf("watermill handler executions moved by %v, want %v", got, messages+1)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "chatstream_build_info"} {
		if after.value(name) < 0 {
			t.Errorf("no %s", name)
		}
	}
	checkLag(t, metricsURL)
	checkEndpoints(t, srv)
}

// checkBusLags: the backend counts the entries of every partition after a
// position: all of them from the start, none after the newest, and at most
// the limit.
func checkBusLags(t *testing.T, b *backend.Backend) {
	t.Helper()
	lagger, ok := b.Buses.(pipeline.BusLagger)
	if !ok {
		t.Fatalf("%s backend has no BusLags", b.Kind)
	}
	ctx := context.Background()
	parts := b.Feed.Partitions()
	all, err := lagger.BusLags(ctx, make([]string, parts), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	total, newest := int64(0), make([]string, parts)
	for p, n := range all {
		total += n
		st, err := b.Buses.BusState(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		newest[p] = st.Last
	}
	if total != 5 { // the messages checkMetrics stored
		t.Errorf("%s: BusLags from the start = %v (total %d), want 5 in all", b.Kind, all, total)
	}
	capped, err := lagger.BusLags(ctx, make([]string, parts), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Max(capped); got != 2 {
		t.Errorf("%s: BusLags capped at 2 = %v, want a partition at 2", b.Kind, capped)
	}
	none, err := lagger.BusLags(ctx, newest, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for p, n := range none {
		if n != 0 && newest[p] != "" {
			t.Errorf("%s: BusLags after the newest entry of partition %d = %d, want 0", b.Kind, p, n)
		}
	}
}

// checkLag: once every message is delivered, no partition lags.
func checkLag(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := scrape(t, url)
		fam := s["chatstream_feed_lag_entries"]
		if fam == nil {
			t.Fatal("no chatstream_feed_lag_entries")
		}
		lag := s.sum("chatstream_feed_lag_entries")
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("feed lag stays %v after every message was delivered", lag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkEndpoints: the internal listener serves health, readiness and
// pprof; the public port serves neither metrics nor pprof.
func checkEndpoints(t *testing.T, srv *testserver.Instance) {
	t.Helper()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
		if code, _ := get(srv.URL() + path); code != http.StatusNotFound {
			t.Errorf("public %s: %d, want 404", path, code)
		}
	}
	if code, body := get(srv.InternalURL() + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("internal /debug/pprof/: %d %.80q", code, body)
	}
	if code, _ := get(srv.InternalURL() + "/readyz"); code != http.StatusOK {
		t.Errorf("internal /readyz: %d, want 200", code)
	}
	code, body := get(srv.InternalURL() + "/healthz")
	var h server.InternalHealth
	if err := json.Unmarshal([]byte(body), &h); err != nil || code != http.StatusOK {
		t.Fatalf("internal /healthz: %d %q: %v", code, body, err)
	}
	if h.Instance != srv.InstanceID() || h.Version == "" || h.Status != "ok" {
		t.Errorf("internal /healthz = %+v, want instance %s and a version", h, srv.InstanceID())
	}
}

// TestNoInternalListener: a zero OpsConfig opens no second port.
func TestNoInternalListener(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{})
	if srv.InternalAddr() != nil || srv.InternalURL() != "" {
		t.Fatalf("internal listener at %v without InternalAddr", srv.InternalAddr())
	}
}

// TestShedLatencyWired: with a shedding target no scheduler meets, the
// instance's detector sheds sends (answered unavailable with a retry hint)
// and the metrics page shows the share and the count.
func TestShedLatencyWired(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, server.Config{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ops:         server.OpsConfig{InternalAddr: "127.0.0.1:0"},
		WS:          ws.Config{FrameRate: 1e6, FrameBurst: 1e6},
		ShedLatency: time.Nanosecond,
	})
	metricsURL := srv.InternalURL() + "/metrics"
	c, err := wstest.Dial(srv.URL(), "shed")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Join("shed", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Await("joined", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Any scheduling takes longer than a nanosecond: within a few 100 ms
	// intervals the share is at its cap and most sends are shed.
	shed := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; shed == 0 && time.Now().Before(deadline); i++ {
		ref := fmt.Sprint("s", i)
		if err := c.Say("shed", "hello", ref); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == ref && (f.Type == "ack" || f.Type == "error") }, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == "error" {
			if f.Code != "unavailable" || f.Retry <= 0 {
				t.Fatalf("refused with %s, want unavailable with retry_after_ms", f.Raw)
			}
			shed++
		}
		time.Sleep(20 * time.Millisecond)
	}
	if shed == 0 {
		t.Fatal("no send was shed")
	}
	m := scrape(t, metricsURL)
	if v := m.value("chatstream_sends_shed_total"); v < 1 {
		t.Errorf("chatstream_sends_shed_total = %v, want at least 1", v)
	}
	if v := m.value("chatstream_shed_share"); v <= 0 {
		t.Errorf("chatstream_shed_share = %v, want above 0", v)
	}
	if v := m.value("chatstream_sched_latency_seconds"); v <= 0 {
		t.Errorf("chatstream_sched_latency_seconds = %v, want above 0", v)
	}
}

// TestScrapeDoesNotWaitOnRedis: while Redis does not answer, a scrape still
// reports the feed lag of the last count instead of waiting out the
// count's timeout and leaving the lag out; the count that ran out is a
// bus_state backend error, and the lag is left out from then on until Redis
// answers again.
func TestScrapeDoesNotWaitOnRedis(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Fatal("pauses Redis: needs a private redis-server")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: log, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, server.Config{Logger: log, Ops: server.OpsConfig{InternalAddr: "127.0.0.1:0"}, Backend: backend.Redis(b, log)})
	url := srv.InternalURL() + "/metrics"
	if s := scrape(t, url); s["chatstream_feed_lag_entries"] == nil {
		t.Fatal("no feed lag while Redis answers")
	}
	rs.Pause()
	resumed := false
	defer func() {
		if !resumed {
			rs.Resume()
		}
	}()
	s := scrape(t, url)
	if s["chatstream_feed_lag_entries"] == nil {
		t.Fatal("the scrape during the stall left the lag out: it waited for Redis")
	}
	before := s.value("chatstream_backend_errors_total", "op", "bus_state")
	deadline := time.Now().Add(10 * time.Second)
	for {
		s = scrape(t, url)
		if s["chatstream_feed_lag_entries"] == nil && s.value("chatstream_backend_errors_total", "op", "bus_state") > before {
			break // the count ran out of time
		}
		if time.Now().After(deadline) {
			t.Fatal("a count against the paused Redis never failed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rs.Resume()
	resumed = true
	deadline = time.Now().Add(10 * time.Second)
	for scrape(t, url)["chatstream_feed_lag_entries"] == nil {
		if time.Now().After(deadline) {
			t.Fatal("no feed lag after Redis answers again")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
