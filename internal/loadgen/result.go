package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a run measured. Counts are of the measured phase only:
// warm-up messages, their acks and their deliveries are left out.
type Result struct {
	// Config is the run's configuration, defaults applied.
	Config Config `json:"config"`
	// Connections is the number of connections opened (receivers and
	// senders); ConnectTime how long opening and joining them took.
	Connections int           `json:"connections"`
	ConnectTime time.Duration `json:"connect_ns"`
	// Measured is the measured window: from the first measured send (or
	// the start of an idle hold) to the end of the drain. Servers' CPU is
	// measured over it.
	Measured time.Duration `json:"measured_ns"`

	// WarmupSent counts the warm-up's sends; Sent the measured ones, at
	// SendsPerSecond over the measured phase (or the part of it in which
	// sending went on, if MaxMessages or an interruption ended it).
	WarmupSent     int64   `json:"warmup_sent"`
	Sent           int64   `json:"sent"`
	SendsPerSecond float64 `json:"sends_per_second"`
	// Acked counts measured sends acknowledged; Refused the error frames
	// answering them, by code (chatstream's unavailable and rate_limited
	// always present on a chatstream run; a rate_limited of the frame rate
	// has no ref and is counted by when it came; Centrifugo's codes are
	// numbers); Unanswered the sends with neither (a frame the
	// server's frame rate discarded, or one still in flight when the drain
	// ended); WriteErrors the sends that could not be written.
	Acked       int64            `json:"acked"`
	Refused     map[string]int64 `json:"refused"`
	Unanswered  int64            `json:"unanswered"`
	WriteErrors int64            `json:"write_errors"`

	// Deliveries counts measured message frames received by receivers;
	// Expected is the number the acked messages owe them (acked × the
	// room's receivers). DeliveriesPerSecond is Deliveries over the
	// measured phase, or, when the last delivery came after its end, over
	// the time from its start to that delivery.
	Deliveries          int64   `json:"deliveries"`
	Expected            int64   `json:"expected"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// LostDeliveries counts (acked message, receiver) pairs with no
	// delivery after the drain; LostMessages the acked messages that
	// missed at least one receiver. After an incomplete drain they
	// include deliveries still in flight, so they prove loss only when
	// Drained is true (or the receiver was disconnected). Duplicates counts deliveries of a
	// message a receiver already had. Foreign counts message frames that
	// were not this run's.
	LostDeliveries int64 `json:"lost_deliveries"`
	LostMessages   int64 `json:"lost_messages"`
	Duplicates     int64 `json:"duplicates"`
	Foreign        int64 `json:"foreign"`

	// DeliveryLatency is send → delivery over every measured delivery;
	// AckLatency send → ack over every measured ack.
	DeliveryLatency Latency `json:"delivery_latency"`
	AckLatency      Latency `json:"ack_latency"`

	// Drained is true when every measured send was answered and every
	// expected delivery arrived within the drain bound; DrainTime is how
	// long the drain took.
	Drained   bool          `json:"drained"`
	DrainTime time.Duration `json:"drain_ns"`
	// Disconnects counts connections the server closed during the run, by
	// close code ("1006": no close frame; "timeout": the run's read
	// deadline passed).
	Disconnects map[string]int64 `json:"disconnects"`

	// Servers has one entry per Config.ServerPIDs; RSSPerConn is the
	// servers' RSS growth from before connecting to the end of the
	// measured window, summed, per connection opened.
	Servers    []ServerStats `json:"servers,omitempty"`
	RSSPerConn int64         `json:"rss_per_conn_bytes,omitempty"`

	// GeneratorCPUPercent is this process's CPU time over the measured
	// window, as a percentage of one core: on a machine shared with the
	// servers, what the load itself took (0 where /proc is missing).
	GeneratorCPUPercent float64 `json:"generator_cpu_percent"`

	// Interrupted is true when the caller's context ended the run early.
	Interrupted bool `json:"interrupted"`
	// Warnings are problems that did not stop the run.
	Warnings []string `json:"warnings,omitempty"`
}

// ServerStats is one server process over a run.
type ServerStats struct {
	PID int `json:"pid"`
	// CPUPercent is the process's CPU time over the measured window, as a
	// percentage of one core (200 is two cores busy).
	CPUPercent float64 `json:"cpu_percent"`
	// RSSBefore is its RSS before the run connected; RSSAfter at the end of
	// the measured window, with every connection still open.
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
}

// collect merges the goroutines' counters into res. Call it after every
// reader and sender has returned.
func (r *run) collect(res *Result, sendEnd time.Time) {
	res.Refused = map[string]int64{}
	if r.cfg.Protocol != ProtocolCentrifugo {
		res.Refused["unavailable"], res.Refused["rate_limited"] = 0, 0
	}
	res.Disconnects = map[string]int64{}
	for _, s := range r.senders {
		res.WarmupSent += s.warmupSent
		res.Sent += s.sent
		res.WriteErrors += s.writeErrors
		res.Acked += s.acks
		for code, n := range s.refused {
			res.Refused[code] += n
		}
		if s.closed != "" {
			res.Disconnects[s.closed]++
		}
	}
	res.Unanswered = max(0, res.Sent-r.answered.Load())
	// Rates are over the planned measured phase, extended when sends or
	// deliveries ran late (a server falling behind), or cut short when
	// sending stopped early (MaxMessages, interruption).
	planned := r.measuredStart.Add(r.cfg.Duration)
	sendSpan := r.cfg.Duration
	if r.left.Load() < 0 || res.Interrupted || sendEnd.After(planned) {
		sendSpan = sendEnd.Sub(r.measuredStart)
	}
	if sendSpan > 0 && r.cfg.Senders > 0 {
		res.SendsPerSecond = float64(res.Sent) / sendSpan.Seconds()
	}

	// Loss: for each receiver, the messages acked in its room by each of
	// the room's senders that it did not get.
	type key struct{ sender, slot int }
	missed := map[key]*bitset{}
	var last time.Time
	for _, rc := range r.receivers {
		res.Deliveries += rc.deliveries
		res.Duplicates += rc.duplicates
		res.Foreign += rc.foreign
		if rc.last.After(last) {
			last = rc.last
		}
		if rc.closed != "" {
			res.Disconnects[rc.closed]++
		}
		slot := rc.room / r.group
		for s := rc.room % r.group; s < len(r.senders); s += r.group {
			var got bitset
			if rc.got != nil {
				got = rc.got[s]
			}
			m := r.senders[s].acked[slot].missing(got)
			if n := m.count(); n > 0 {
				res.LostDeliveries += n
				k := key{s, slot}
				if missed[k] == nil {
					missed[k] = new(bitset)
				}
				missed[k].union(m)
			}
		}
	}
	for _, m := range missed {
		res.LostMessages += m.count()
	}
	res.Expected = r.expected.Load()
	deliverySpan := sendSpan
	if last.After(r.measuredStart.Add(sendSpan)) {
		deliverySpan = last.Sub(r.measuredStart)
	}
	if deliverySpan > 0 && res.Deliveries > 0 {
		res.DeliveriesPerSecond = float64(res.Deliveries) / deliverySpan.Seconds()
	}
	// Each reader kept its own histogram, so that a thousand readers do
	// not contend for one; the buckets add up to the same distribution.
	var delivery, ack histogram
	for _, rc := range r.receivers {
		delivery.merge(&rc.latency)
	}
	for _, s := range r.senders {
		ack.merge(&s.latency)
	}
	res.DeliveryLatency = delivery.summary()
	res.AckLatency = ack.summary()
}

// serverStats turns the samples before connecting, at the start of the
// measured window and at its end into per-server figures.
func serverStats(before, start, end []ProcSample, conns int) ([]ServerStats, int64) {
	var out []ServerStats
	var grown int64
	for i := range before {
		st := ServerStats{PID: before[i].PID, CPUPercent: cpuPercent(start[i], end[i]), RSSBefore: before[i].RSS, RSSAfter: end[i].RSS}
		grown += st.RSSAfter - st.RSSBefore
		out = append(out, st)
	}
	if len(out) == 0 || conns == 0 {
		return out, 0
	}
	return out, grown / int64(conns)
}

// cpuPercent returns a process's CPU time between two samples as a
// percentage of one core.
func cpuPercent(from, to ProcSample) float64 {
	wall := to.At.Sub(from.At)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(to.CPU-from.CPU) / float64(wall)
}

// Describe says what the configuration runs, in one line.
func (c Config) Describe() string {
	var b strings.Builder
	if c.Name != "" {
		fmt.Fprintf(&b, "scenario %s: ", c.Name)
	}
	fmt.Fprintf(&b, "%s, %s", plural(c.Rooms, "room"), plural(c.Conns, "receiver"))
	if c.Senders == 0 {
		fmt.Fprintf(&b, ", idle for %v", c.Duration)
	} else {
		fmt.Fprintf(&b, ", %s, %g msg/s, %d-byte texts; warm-up %v, measured %v, drain ≤ %v",
			plural(c.Senders, "sender"), c.Rate, c.TextSize, c.Warmup, c.Duration, c.Drain)
	}
	if c.Protocol == ProtocolCentrifugo {
		b.WriteString("; Centrifugo's protocol")
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// WriteTable writes the result for people: one line per figure, then the
// latencies and the servers as small tables.
func (res Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
	p("run\t%s", res.Config.Describe())
	p("connections\t%d opened and joined in %v", res.Connections, res.ConnectTime.Round(time.Millisecond))
	if res.Config.Senders > 0 {
		p("sent\t%d (%.0f/s), after %d warm-up", res.Sent, res.SendsPerSecond, res.WarmupSent)
		p("acked\t%d", res.Acked)
		p("refused\t%s", counts(res.Refused, "none"))
		p("unanswered\t%d (write errors %d)", res.Unanswered, res.WriteErrors)
		p("deliveries\t%d of %d expected (%.0f/s)", res.Deliveries, res.Expected, res.DeliveriesPerSecond)
		drain, inFlight := "complete", ""
		if !res.Drained {
			drain, inFlight = "incomplete", " (drain incomplete: includes deliveries still in flight)"
		}
		p("lost\t%d deliveries (%d messages)%s; duplicates %d", res.LostDeliveries, res.LostMessages, inFlight, res.Duplicates)
		p("drain\t%s after %v", drain, res.DrainTime.Round(time.Millisecond))
	}
	p("disconnects\t%s", counts(res.Disconnects, "none"))
	if res.GeneratorCPUPercent > 0 {
		p("chatload cpu\t%.0f%% of a core", res.GeneratorCPUPercent)
	}
	if res.Foreign > 0 {
		p("foreign\t%d message frames not of this run", res.Foreign)
	}
	if res.Interrupted {
		p("interrupted\tyes: the figures cover part of the run")
	}
	for _, warn := range res.Warnings {
		p("warning\t%s", warn)
	}
	if res.Config.Senders > 0 {
		p("")
		p("latency\tp50\tp90\tp99\tmax\tcount")
		for _, l := range []struct {
			name string
			l    Latency
		}{{"send → delivery", res.DeliveryLatency}, {"send → ack", res.AckLatency}} {
			p("%s\t%s\t%s\t%s\t%s\t%d", l.name, ms(l.l.P50), ms(l.l.P90), ms(l.l.P99), ms(l.l.Max), l.l.Count)
		}
	}
	if len(res.Servers) > 0 {
		p("")
		p("server pid\tcpu (%% of a core)\trss before\trss after")
		for _, s := range res.Servers {
			p("%d\t%.0f%%\t%s\t%s", s.PID, s.CPUPercent, mib(s.RSSBefore), mib(s.RSSAfter))
		}
		p("rss growth per connection\t%.1f KiB", float64(res.RSSPerConn)/1024)
	}
	return tw.Flush()
}

// counts formats a count map as "a 1, b 2", keys sorted; empty gives none.
func counts(m map[string]int64, none string) string {
	if len(m) == 0 {
		return none
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// ms formats a latency in milliseconds with three significant digits.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
