// Package metrics exposes a chatstream instance's counters as Prometheus
// metrics (docs/OPERATIONS.md, "Metrics", lists them).
//
// Counters the instance keeps anyway (pipeline.Stats, the admission's and
// the hub's counters, the moderation chain's decisions) are read when
// Prometheus scrapes, not counted twice; what has no counter elsewhere
// (latency histograms, backend errors) is observed through the small hooks
// the packages offer (pipeline.Observer, ws.Observer), which Metrics
// implements. Every Metrics has its own registry, so one process may run
// several instances.
package metrics

import (
	"net/http"
	"sync"
	"time"

	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/version"
)

// Namespace starts the name of every chatstream metric.
const Namespace = "chatstream"

// Buckets of the histograms, in seconds. Acks and deliveries take about a
// millisecond on loopback and a few with Redis; the upper buckets catch a
// backend that stalls up to the store timeout (pipeline.DefaultStoreTimeout).
var (
	// LatencyBuckets are those of chatstream_ack_seconds and
	// chatstream_backend_append_seconds.
	LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// LagBuckets are those of chatstream_delivery_lag_seconds, which also
	// holds the clock difference between the instance and Redis.
	LagBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// Metrics is one instance's registry and the observers that feed it. It is
// safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	ack, deliveryLag, appendTime prometheus.Histogram
	backendErrors                *prometheus.CounterVec

	ingestOnce sync.Once
	ingestMW   message.HandlerMiddleware
}

var _ pipeline.Observer = (*Metrics)(nil)

// New returns a Metrics with a registry of its own holding the Go and
// process collectors, the build and the observed metrics. Scrape-time
// sources are added with Watch.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.ack = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "ack_seconds", Buckets: LatencyBuckets,
		Help: "Time from reading a send frame to queueing its ack (or its error) on the socket.",
	})
	m.deliveryLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "delivery_lag_seconds", Buckets: LagBuckets,
		Help: "Time from a message's seq (the backend's clock when it was stored) to its queueing on the first local socket.",
	})
	m.appendTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "backend_append_seconds", Buckets: LatencyBuckets,
		Help: "Time from queueing a message for the store to the store's answer, failed or not.",
	})
	m.backendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "backend_errors_total",
		Help: "Failed backend operations, by operation.",
	}, []string{"op"})
	for _, op := range pipeline.Ops() {
		m.backendErrors.WithLabelValues(op) // every op has a series from the start
	}
	v := version.Read()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels name the build the instance runs.",
		ConstLabels: prometheus.Labels{"version": v.Short(), "revision": v.Revision, "goversion": v.Go},
	})
	build.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.ack, m.deliveryLag, m.appendTime, m.backendErrors,
	)
	return m
}

// Registry returns the instance's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's text or protobuf format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// IngestMiddleware returns Watermill's own handler metrics
// (chatstream_watermill_handler_execution_time_seconds) as a middleware,
// for pipeline.IngestConfig.Instrument. It is made once; later calls
// return the same middleware.
func (m *Metrics) IngestMiddleware() message.HandlerMiddleware {
	m.ingestOnce.Do(func() {
		m.ingestMW = wmetrics.NewPrometheusMetricsBuilder(m.reg, Namespace, "watermill").NewRouterMiddleware().Middleware
	})
	return m.ingestMW
}

// AppendDone observes one append's duration (pipeline.Observer).
func (m *Metrics) AppendDone(d time.Duration, _ error) { m.appendTime.Observe(d.Seconds()) }

// BackendError counts a failed backend operation (pipeline.Observer).
func (m *Metrics) BackendError(op string) { m.backendErrors.WithLabelValues(op).Inc() }

// AckQueued observes the time from reading a send frame to queueing its
// answer (ws.Observer).
func (m *Metrics) AckQueued(d time.Duration) { m.ack.Observe(d.Seconds()) }

// DeliveryQueued observes the time from a message's storing to its
// queueing on a local socket (ws.Observer).
func (m *Metrics) DeliveryQueued(d time.Duration) { m.deliveryLag.Observe(d.Seconds()) }
