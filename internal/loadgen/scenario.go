package loadgen

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Scenario is one of the standard load shapes of docs/PERFORMANCE.md.
type Scenario struct {
	// Name is what --scenario takes: B, C, H, R, I, P or P2.
	Name string
	// Summary describes the shape in a few words.
	Summary string
	// Rooms is the number of rooms; ReceiversPerRoom the receiving
	// connections in each.
	Rooms, ReceiversPerRoom int
	// Senders is the number of sending connections (0: idle connections).
	Senders int
	// Rate is the number of messages per second, in total.
	Rate float64
	// TextSize is each message's text size, in bytes.
	TextSize int
	// Warmup, Duration and Drain are the run's phases (Config).
	Warmup, Duration, Drain time.Duration
}

// Phases and text size shared by the standard scenarios.
const (
	// ScenarioTextSize is the text size of every scenario's messages.
	ScenarioTextSize = 100
	// ScenarioWarmup is sent, unmeasured, before the measured phase, so
	// that connections, buffers and the server's rooms are warm.
	ScenarioWarmup = 2 * time.Second
	// ScenarioDuration is the measured phase.
	ScenarioDuration = 10 * time.Second
	// ScenarioDrain bounds the wait for acks and deliveries in flight.
	ScenarioDrain = 5 * time.Second
	// ScenarioIdleHold is how long scenario I holds its connections idle.
	ScenarioIdleHold = 5 * time.Second
)

// Scenarios returns the standard scenarios, in the order of
// docs/PERFORMANCE.md. The slice is new on every call.
func Scenarios() []Scenario {
	traffic := func(name, summary string, rooms, perRoom, senders int, rate float64) Scenario {
		return Scenario{
			Name: name, Summary: summary, Rooms: rooms, ReceiversPerRoom: perRoom, Senders: senders, Rate: rate,
			TextSize: ScenarioTextSize, Warmup: ScenarioWarmup, Duration: ScenarioDuration, Drain: ScenarioDrain,
		}
	}
	return []Scenario{
		traffic("B", "broadcast: 1 room × 1,000 receivers, 100 msg/s", 1, 1000, 10, 100),
		traffic("C", "chatty: 1 room × 100 receivers, 800 msg/s", 1, 100, 10, 800),
		traffic("H", "heavy fan-out: 1 room × 1,000 receivers, 200 msg/s (200k deliveries/s)", 1, 1000, 10, 200),
		traffic("R", "many rooms: 500 rooms × 10 receivers, 1,000 msg/s in total", 500, 10, 100, 1000),
		{
			Name: "I", Summary: "idle: 10,000 connections, 10 in each of 1,000 rooms, no messages",
			Rooms: 1000, ReceiversPerRoom: 10, TextSize: ScenarioTextSize, Duration: ScenarioIdleHold,
		},
		traffic("P", "ingest: 100 senders in 100 rooms (1 receiver each), 10,000 msg/s in total", 100, 1, 100, 10_000),
		traffic("P2", "ingest: 100 senders in 100 rooms (1 receiver each), 25,000 msg/s in total", 100, 1, 100, 25_000),
	}
}

// LookupScenario returns the scenario named name (case-insensitive).
func LookupScenario(name string) (Scenario, error) {
	var known []string
	for _, s := range Scenarios() {
		if strings.EqualFold(s.Name, name) {
			return s, nil
		}
		known = append(known, s.Name)
	}
	return Scenario{}, fmt.Errorf("loadgen: unknown scenario %q (known: %s)", name, strings.Join(known, ", "))
}

// Config returns the run configuration of the scenario against urls, with
// the rooms, the receivers (in total), the senders and the rate multiplied
// by scale, each rounded and at least 1 where the scenario's is not 0, and
// at least one receiver per room: scale 1 is the scenario itself, 0.01 a
// tiny version of it for tests. Phases and text size are not scaled.
func (s Scenario) Config(urls []string, scale float64) Config {
	n := func(v int) int {
		if v == 0 {
			return 0
		}
		return max(1, int(math.Round(float64(v)*scale)))
	}
	rate := 0.0
	if s.Rate > 0 {
		rate = max(1, math.Round(s.Rate*scale))
	}
	rooms := n(s.Rooms)
	return Config{
		URLs: urls, Name: s.Name, Rooms: rooms, Conns: max(rooms, n(s.Rooms*s.ReceiversPerRoom)), Senders: n(s.Senders), Rate: rate,
		TextSize: s.TextSize, Warmup: s.Warmup, Duration: s.Duration, Drain: s.Drain,
	}
}
