package loadgen_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/loadgen"
)

// TestScenarioTable: every standard scenario resolves to the numbers of
// docs/PERFORMANCE.md, at full scale and scaled down.
func TestScenarioTable(t *testing.T) {
	urls := []string{"http://127.0.0.1:8080"}
	traffic := func(rooms, receivers, senders int, rate float64) loadgen.Config {
		return loadgen.Config{
			URLs: urls, Rooms: rooms, Conns: receivers, Senders: senders, Rate: rate, TextSize: 100,
			Warmup: 2 * time.Second, Duration: 10 * time.Second, Drain: 5 * time.Second,
		}
	}
	for _, tc := range []struct {
		name  string
		scale float64
		want  loadgen.Config
	}{
		{"B", 1, traffic(1, 1000, 10, 100)},
		{"C", 1, traffic(1, 100, 10, 800)},
		{"H", 1, traffic(1, 1000, 10, 200)},
		{"R", 1, traffic(500, 5000, 100, 1000)},
		{"I", 1, loadgen.Config{URLs: urls, Rooms: 1000, Conns: 10_000, TextSize: 100, Duration: 5 * time.Second}},
		{"P", 1, traffic(100, 100, 100, 10_000)},
		{"P2", 1, traffic(100, 100, 100, 25_000)},
		{"H", 0.01, traffic(1, 10, 1, 2)},
		{"R", 0.01, traffic(5, 50, 1, 10)},
		{"I", 0.01, loadgen.Config{URLs: urls, Rooms: 10, Conns: 100, TextSize: 100, Duration: 5 * time.Second}},
		{"P2", 0.01, traffic(1, 1, 1, 250)},
		{"p2", 0.1, traffic(10, 10, 10, 2500)}, // names are case-insensitive
	} {
		t.Run(fmt.Sprintf("%s@%g", tc.name, tc.scale), func(t *testing.T) {
			s, err := loadgen.LookupScenario(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			got := s.Config(urls, tc.scale)
			tc.want.Name = strings.ToUpper(tc.name)
			if got.Describe() != tc.want.Describe() || got.Rooms != tc.want.Rooms || got.Conns != tc.want.Conns ||
				got.Senders != tc.want.Senders || got.Rate != tc.want.Rate || got.TextSize != tc.want.TextSize ||
				got.Warmup != tc.want.Warmup || got.Duration != tc.want.Duration || got.Drain != tc.want.Drain {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if err := got.WithDefaults().Validate(); err != nil {
				t.Errorf("scenario config is invalid: %v", err)
			}
		})
	}
}

// TestScenarioNames: the table holds exactly the scenarios, in
// order, and an unknown name lists them.
func TestScenarioNames(t *testing.T) {
	var names []string
	for _, s := range loadgen.Scenarios() {
		names = append(names, s.Name)
	}
	if got, want := strings.Join(names, " "), "B C H R I P P2"; got != want {
		t.Errorf("scenarios = %s, want %s", got, want)
	}
	_, err := loadgen.LookupScenario("Q")
	if err == nil || !strings.Contains(err.Error(), "known: B, C, H, R, I, P, P2") {
		t.Errorf("LookupScenario(Q) = %v, want the known names", err)
	}
}
