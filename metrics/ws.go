package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatstream/chatstream/ws"
)

var _ ws.Observer = (*Metrics)(nil)

var (
	descFrames = desc("frames_received_total",
		"Client frames handled, by type (auth, join, leave, send, history, ping; invalid: not a frame of the protocol; binary).", "type")
	descErrors     = desc("errors_sent_total", "Error frames sent to clients, by code (docs/PROTOCOL.md).", "code")
	descDeliveries = desc("deliveries_total", "Messages queued to local sockets: one per message and member.")
	descRooms      = desc("rooms", "Rooms with at least one member on this instance.")
)

// describeWS sends the descriptions of the gateway's frame counters.
func (c *collector) describeWS(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFrames, descErrors, descDeliveries, descRooms} {
		ch <- d
	}
}

// collectWS reads the gateway's frame counters.
func (c *collector) collectWS(ch chan<- prometheus.Metric) {
	st := c.src.Hub.Stats()
	for _, t := range ws.FrameTypes() {
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(st.FramesReceived[t]), t)
	}
	for code, n := range st.ErrorsSent {
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n), code)
	}
	ch <- prometheus.MustNewConstMetric(descDeliveries, prometheus.CounterValue, float64(st.Deliveries))
	ch <- prometheus.MustNewConstMetric(descRooms, prometheus.GaugeValue, float64(st.Rooms))
}
