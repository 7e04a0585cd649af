package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/internal/loadgen"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// parse returns the configuration the command line args give.
func parse(t *testing.T, args ...string) (loadgen.Config, error) {
	t.Helper()
	var c cli
	var out strings.Builder
	code := -1
	parser, err := newParser(&c, &out, &out, func(c int) { code = c })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	if code != -1 {
		t.Fatalf("parse %v exited %d: %s", args, code, out.String())
	}
	return config(c)
}

// TestConfigFromFlags: a scenario gives its values, explicit flags
// override them, and without a scenario the defaults apply.
func TestConfigFromFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // Describe() of the result
	}{
		{"defaults", nil, "1 room, 100 receivers, 10 senders, 100 msg/s, 100-byte texts; warm-up 0s, measured 10s, drain ≤ 5s"},
		{"scenario", []string{"--scenario", "H"}, "scenario H: 1 room, 1000 receivers, 10 senders, 200 msg/s, 100-byte texts; warm-up 2s, measured 10s, drain ≤ 5s"},
		{"overridden", []string{"--scenario", "h", "--rate", "50", "--duration", "3s", "--warmup", "0s", "--conns", "20"},
			"scenario H: 1 room, 20 receivers, 10 senders, 50 msg/s, 100-byte texts; warm-up 0s, measured 3s, drain ≤ 5s"},
		{"scaled", []string{"--scenario", "R", "--scale", "0.1"}, "scenario R: 50 rooms, 500 receivers, 10 senders, 100 msg/s, 100-byte texts; warm-up 2s, measured 10s, drain ≤ 5s"},
		{"idle", []string{"--scenario", "I"}, "scenario I: 1000 rooms, 10000 receivers, idle for 5s"},
		{"idle by flag", []string{"--senders", "0", "--conns", "7"}, "1 room, 7 receivers, idle for 10s"},
		{"centrifugo", []string{"--scenario", "R", "--protocol", "centrifugo"},
			"scenario R: 500 rooms, 5000 receivers, 100 senders, 1000 msg/s, 100-byte texts; warm-up 2s, measured 10s, drain ≤ 5s; Centrifugo's protocol"},
		{"old flags", []string{"--conns", "1000", "--senders", "10", "--rate", "200", "--duration", "8s"},
			"1 room, 1000 receivers, 10 senders, 200 msg/s, 100-byte texts; warm-up 0s, measured 8s, drain ≤ 5s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Describe(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if err := cfg.WithDefaults().Validate(); err != nil {
				t.Errorf("invalid: %v", err)
			}
		})
	}
	cfg, err := parse(t, "--scenario", "P", "--server-pid", "12,34", "--max-messages", "500")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ServerPIDs) != 2 || cfg.ServerPIDs[0] != 12 || cfg.ServerPIDs[1] != 34 || cfg.MaxMessages != 500 {
		t.Errorf("server pids %v, max messages %d; want [12 34], 500", cfg.ServerPIDs, cfg.MaxMessages)
	}
}

// TestUsageErrors: bad flags exit 2 with a message, before any connection.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://10.0.0.1:8080"}, "not a loopback address"},
		{[]string{"--url", "http://127.0.0.1:8080,http://192.168.1.1:8080"}, "not a loopback address"},
		{[]string{"--scenario", "Z"}, "known: B, C, H, R, I, P, P2"},
		{[]string{"--scale", "0.5"}, "--scale needs --scenario"},
		{[]string{"--scenario", "B", "--scale", "0"}, "--scale"},
		{[]string{"--duration", "11m"}, "duration"},
		{[]string{"--nope"}, "unknown flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := run(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestListScenarios prints every scenario, and --help exits 0.
func TestListScenarios(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "--scenario") {
		t.Errorf("--help: exit %d, output %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"--list-scenarios"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, s := range loadgen.Scenarios() {
		if !strings.Contains(stdout.String(), s.Name+" ") || !strings.Contains(stdout.String(), s.Summary) {
			t.Errorf("list lacks %s: %s", s.Name, stdout.String())
		}
	}
}

// TestRunJSON runs a tiny scenario against a real server and reads the
// JSON result a script would, and the profiles of chatload it wrote.
func TestRunJSON(t *testing.T) {
	srv := testserver.Start(t, server.Config{
		WS:        ws.Config{FrameRate: 100_000, FrameBurst: 100_000},
		Admission: admission.Config{MaxConnsPerIP: 20_000, HandshakeBurst: 20_000},
	})
	dir := t.TempDir()
	cpuFile, memFile := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	var stdout, stderr strings.Builder
	code := run([]string{"--url", srv.URL(), "--scenario", "B", "--scale", "0.02", "--warmup", "100ms", "--duration", "500ms", "--json",
		"--cpuprofile", cpuFile, "--memprofile", memFile}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{cpuFile, memFile} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 100 || !bytes.HasPrefix(data, []byte{0x1f, 0x8b}) { // pprof files are gzipped
			t.Errorf("%s: %d bytes starting %x, want a gzipped profile", filepath.Base(f), len(data), data[:min(len(data), 4)])
		}
	}
	var res struct {
		Config struct {
			Scenario  string `json:"scenario"`
			Receivers int    `json:"receivers"`
		} `json:"config"`
		Sent            int64            `json:"sent"`
		Acked           int64            `json:"acked"`
		Deliveries      int64            `json:"deliveries"`
		LostDeliveries  int64            `json:"lost_deliveries"`
		Refused         map[string]int64 `json:"refused"`
		DeliveryLatency struct {
			P99 time.Duration `json:"p99_ns"`
		} `json:"delivery_latency"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if res.Config.Scenario != "B" || res.Config.Receivers != 20 || res.Sent == 0 || res.Acked != res.Sent ||
		res.Deliveries != 20*res.Acked || res.LostDeliveries != 0 || res.DeliveryLatency.P99 <= 0 {
		t.Errorf("result %+v, want scenario B with 20 receivers, every message delivered", res)
	}
	if _, ok := res.Refused["unavailable"]; !ok {
		t.Errorf("refused %v, want unavailable and rate_limited listed", res.Refused)
	}
}

// TestProfileErrors: a profile that cannot be written fails the run with
// exit 1 before any connection (nothing listens at the URL, so a later
// check would have reported the dial instead).
func TestProfileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "p.pprof")
	for _, tc := range []struct {
		flag, want string
	}{
		{"--cpuprofile", "cpu profile"},
		{"--memprofile", "memory profile"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run([]string{"--url", "http://127.0.0.1:1", "--duration", "1s", tc.flag, missing}, &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), "dial") {
				t.Errorf("exit %d, stderr %q; want 1 and %q before any dial", code, stderr.String(), tc.want)
			}
		})
	}
}
