package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/ws"
)

// PipelineSource is what the metrics read of a pipeline.Pipeline.
type PipelineSource interface {
	// Stats returns the pipeline's counters.
	Stats() pipeline.Stats
	// Positions returns the last seq delivered per partition.
	Positions() []string
}

// HubSource is what the metrics read of a ws.Hub.
type HubSource interface {
	// Conns is the number of open WebSockets.
	Conns() int
	// SlowDisconnects and FloodDisconnects count the connections closed
	// with 1008 for a full send queue and for flooding.
	SlowDisconnects() int64
	FloodDisconnects() int64
	// QueuedBytes is the bytes waiting in every send queue.
	QueuedBytes() int64
	// Stats returns the frame counters.
	Stats() ws.Stats
}

// AdmissionSource is what the metrics read of an admission.Admission.
type AdmissionSource interface {
	// Stats returns the admission's counters.
	Stats() admission.Stats
}

// ModerationSource is what the metrics read of a moderation.Chain.
type ModerationSource interface {
	// Stats returns every moderator's counters by name.
	Stats() map[string]moderation.Stats
}

// OverloadSource is what the metrics read of an overload.Detector.
type OverloadSource interface {
	// Share is the share of new sends shed now.
	Share() float64
	// Latency is the scheduling latency of the last interval.
	Latency() time.Duration
	// Shedded counts the sends shed.
	Shedded() int64
}

// MemorySource is what the metrics read of the memory backend
// (memstore.Backend).
type MemorySource interface {
	// Stats returns what it keeps and what its bounds made it drop.
	Stats() memstore.Stats
}

// FeedLagCap is the largest lag per partition chatstream_feed_lag_entries
// counts; a larger one is reported as FeedLagCap. It bounds the work of a
// scrape in the backend (an XRANGE of at most this many entries per bus).
const FeedLagCap = 10_000

// FeedLagTimeout bounds one count of the lag in the backend (the Redis
// client's own round-trip timeout, redisstore.DefaultTimeout, can hold it
// longer); a
// count that runs out of it (or fails) counts a bus_state backend error,
// and the lag is left out until a count succeeds again.
const FeedLagTimeout = 2 * time.Second

// FeedLagMaxAge is the oldest count a scrape reports: a count started
// longer ago (the backend is slow to answer, or scrapes are far apart) is
// left out instead.
const FeedLagMaxAge = time.Minute

// FeedLagWait is the longest a scrape waits for the lag count it starts:
// past it, the scrape reports the last count instead, and the count goes
// on in the background (within FeedLagTimeout), so a scrape never waits on
// a backend that does not answer.
const FeedLagWait = 250 * time.Millisecond

// Sources are the counters read at each scrape. A nil field is left out.
type Sources struct {
	Pipeline   PipelineSource
	Hub        HubSource
	Admission  AdmissionSource
	Moderation ModerationSource
	Overload   OverloadSource
	// Memory is the memory backend, nil with Redis.
	Memory MemorySource
	// Lags counts the feed entries after the pipeline's positions, for
	// chatstream_feed_lag_entries (needs Pipeline).
	Lags pipeline.BusLagger
	// StartedAt is when the instance started: a partition it has
	// delivered nothing of yet lags by the entries stored since.
	StartedAt time.Time
}

// Watch registers a collector reading src at every scrape. Call it once.
func (m *Metrics) Watch(src Sources) error {
	return m.reg.Register(&collector{m: m, src: src})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

var (
	descConns   = desc("connections", "Open WebSocket connections on this instance.")
	descRefused = desc("connections_refused_total",
		"WebSocket upgrades refused, by reason (max_conns, max_conns_per_ip, handshake_rate, shutting_down).", "reason")
	descSlow         = desc("slow_disconnects_total", "Connections closed with 1008 because their send queue was full (frames or bytes).")
	descFlood        = desc("flood_disconnects_total", "Connections closed with 1008 for sending far more frames than their rate.")
	descQueued       = desc("send_queue_bytes", "Bytes of frames waiting in the send queues of all open connections.")
	descStored       = desc("messages_stored_total", "Messages this instance stored (duplicates of an earlier send not counted).")
	descRefusedM     = desc("messages_refused_total", "Sends this instance refused or could not store.")
	descFeed         = desc("feed_messages_total", "Messages this instance read from the feed and handed to its local members.")
	descUndecoded    = desc("feed_undecodable_total", "Feed entries skipped because they could not be decoded.")
	descShedShare    = desc("shed_share", "Share of new sends shed now, because the Go scheduler's latency is over its target (0 to 0.95).")
	descSchedLatency = desc("sched_latency_seconds", "The Go scheduler's latency (90th percentile) over the last sampling interval of the overload detector.")
	descShed         = desc("sends_shed_total", "Sends answered unavailable because the instance was overloaded, before they entered the pipeline.")
	descLag          = desc("feed_lag_entries", "Entries of each partition's bus after the last one this instance delivered (capped at 10000).", "partition")
	descMemRooms     = desc("memory_rooms", "Rooms the memory backend keeps.")
	descMemBytes     = desc("memory_history_bytes", "Approximate size of the messages the memory backend keeps, as --memory-max-bytes counts it.")
	descMemForgotten = desc("memory_rooms_forgotten_total",
		"Rooms the memory backend dropped whole, with their history, by reason (max_rooms, max_bytes, idle).", "reason")
	descMemDropped = desc("memory_messages_dropped_total",
		"Messages the memory backend dropped from rooms it keeps, to stay within --memory-max-bytes (not --room-maxlen's retention).")
	descModeration = desc("moderation_decisions_total",
		"Moderation decisions, by moderator, rule (empty: the moderator's total) and decision (accepted, rejected, rewritten, error).",
		"moderator", "rule", "decision")
)

// collector reads the sources at each scrape.
type collector struct {
	m   *Metrics
	src Sources

	// lagMu guards lags (the last successful count, nil before one or
	// after a failed one), lagsAt (when that count started) and counting
	// (closed when the count in flight ends; nil when none is).
	lagMu    sync.Mutex
	lags     []int64
	lagsAt   time.Time
	counting chan struct{}
}

// Describe sends every metric the collector may emit.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descRefused, descSlow, descFlood, descQueued, descStored,
		descRefusedM, descFeed, descUndecoded, descLag, descModeration, descShedShare, descSchedLatency, descShed,
		descMemRooms, descMemBytes, descMemForgotten, descMemDropped} {
		ch <- d
	}
	c.describeWS(ch)
}

// Collect reads every source.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if h := c.src.Hub; h != nil {
		gauge(descConns, float64(h.Conns()))
		counter(descSlow, float64(h.SlowDisconnects()))
		counter(descFlood, float64(h.FloodDisconnects()))
		gauge(descQueued, float64(h.QueuedBytes()))
		c.collectWS(ch)
	}
	if a := c.src.Admission; a != nil {
		st := a.Stats()
		for _, r := range admission.Reasons() {
			counter(descRefused, float64(st.Refused[r]), r.String())
		}
	}
	if p := c.src.Pipeline; p != nil {
		st := p.Stats()
		counter(descStored, float64(st.Stored))
		counter(descRefusedM, float64(st.Refused))
		counter(descFeed, float64(st.Delivered))
		counter(descUndecoded, float64(st.Undecodable))
		c.collectLag(gauge)
	}
	if o := c.src.Overload; o != nil {
		gauge(descShedShare, o.Share())
		gauge(descSchedLatency, o.Latency().Seconds())
		counter(descShed, float64(o.Shedded()))
	}
	if mem := c.src.Memory; mem != nil {
		st := mem.Stats()
		gauge(descMemRooms, float64(st.Rooms))
		gauge(descMemBytes, float64(st.Bytes))
		counter(descMemForgotten, float64(st.ForgottenMaxRooms), "max_rooms")
		counter(descMemForgotten, float64(st.ForgottenMaxBytes), "max_bytes")
		counter(descMemForgotten, float64(st.ForgottenIdle), "idle")
		counter(descMemDropped, float64(st.DroppedMessages))
	}
	if mod := c.src.Moderation; mod != nil {
		for name, st := range mod.Stats() {
			decisions(counter, name, "", st.Counts)
			for rule, rc := range st.Rules {
				decisions(counter, name, rule, rc)
			}
		}
	}
}

func decisions(counter func(*prometheus.Desc, float64, ...string), moderator, rule string, n moderation.Counts) {
	counter(descModeration, float64(n.Accepted), moderator, rule, "accepted")
	counter(descModeration, float64(n.Rejected), moderator, rule, "rejected")
	counter(descModeration, float64(n.Rewritten), moderator, rule, "rewritten")
	counter(descModeration, float64(n.Errors), moderator, rule, "error")
}

// collectLag reports each partition's entries after this instance's
// position: it starts a count (one backend round trip) unless one is in
// flight, and waits for it at most FeedLagWait before it reports the last
// count.
func (c *collector) collectLag(gauge func(*prometheus.Desc, float64, ...string)) {
	if c.src.Lags == nil {
		return
	}
	c.lagMu.Lock()
	done := c.counting
	if done == nil {
		done = make(chan struct{})
		c.counting = done
		go c.countLag(done)
	}
	c.lagMu.Unlock()
	t := time.NewTimer(FeedLagWait)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	c.lagMu.Lock()
	lags := c.lags
	if time.Since(c.lagsAt) > FeedLagMaxAge {
		lags = nil
	}
	c.lagMu.Unlock()
	for p, n := range lags {
		gauge(descLag, float64(n), strconv.Itoa(p))
	}
}

// countLag counts the entries of every bus after the pipeline's positions,
// keeps the result for the scrapes, and closes done.
func (c *collector) countLag(done chan struct{}) {
	defer func() {
		c.lagMu.Lock()
		c.counting = nil
		c.lagMu.Unlock()
		close(done)
	}()
	began := time.Now()
	after := c.src.Pipeline.Positions()
	start := pipeline.Seq{MS: uint64(max(c.src.StartedAt.UnixMilli(), 0))}.String()
	for p, pos := range after {
		if pos == "" {
			after[p] = start
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), FeedLagTimeout)
	defer cancel()
	lags, err := c.src.Lags.BusLags(ctx, after, FeedLagCap)
	if err != nil {
		c.m.BackendError(pipeline.OpBusState)
		lags = nil
	}
	c.lagMu.Lock()
	c.lags, c.lagsAt = lags, began
	c.lagMu.Unlock()
}
