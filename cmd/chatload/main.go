// Command chatload is chatstream's load generator: real WebSocket clients
// spread over one or more gateways on this machine, sending at a fixed rate
// for a bounded time and count, reporting deliveries per second, send →
// delivery and send → ack latency, loss, refused sends and, with
// --server-pid, the servers' CPU and memory.
//
//	chatload --scenario H --server-pid $(pgrep -f 'chatstream.*18090')
//	chatload --url http://127.0.0.1:8081,http://127.0.0.1:8082 --conns 1000 --rate 200 --duration 10s
//
// The standard scenarios, and the server flags that lift the per-address
// and per-connection limits for them, are in docs/PERFORMANCE.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/internal/loadgen"
)

// cli holds the flags. Pointer flags are nil unless given, so that a given
// flag overrides the scenario's value and an absent one keeps it.
type cli struct {
	Scenario        string         `placeholder:"NAME" help:"Run a standard scenario: ${scenarios} (docs/PERFORMANCE.md). Flags given explicitly override its values."`
	Scale           float64        `default:"1" help:"With --scenario: multiply its rooms, receivers, senders and rate by this (each at least 1, and a receiver per room)."`
	ListScenarios   bool           `help:"List the scenarios and exit."`
	URL             string         `default:"http://127.0.0.1:8080" help:"Gateway base URLs, comma separated (loopback only); connections are spread over them."`
	Conns           *int           `placeholder:"N" help:"Receiving connections, spread over the rooms (default ${default_conns})."`
	Rooms           *int           `placeholder:"N" help:"Rooms (default 1)."`
	Senders         *int           `placeholder:"N" help:"Sending connections; 0 holds the receivers idle (default ${default_senders})."`
	Rate            *float64       `placeholder:"MSGS" help:"Messages per second, in total (default ${default_rate})."`
	TextSize        *int           `placeholder:"BYTES" help:"Exact text size of each message (default ${default_text_size}; ${min_text_size} to ${max_text_size})."`
	Warmup          *time.Duration `placeholder:"D" help:"Unmeasured sending before the measured phase (default none; at most ${max_warmup})."`
	Duration        *time.Duration `placeholder:"D" help:"Measured phase (default ${default_duration}; at most ${max_duration})."`
	Drain           *time.Duration `placeholder:"D" help:"Longest wait for acks and deliveries in flight after it (default ${default_drain}; at most ${max_drain})."`
	MaxMessages     *int           `placeholder:"N" help:"Most messages sent, warm-up included (default rate × (warm-up + duration); at most ${max_messages})."`
	DialConcurrency *int           `placeholder:"N" help:"Connections opened at once (default ${default_dial_concurrency})."`
	Protocol        string         `default:"chatstream" enum:"chatstream,centrifugo" help:"Protocol the clients speak: chatstream, or centrifugo to measure a Centrifugo server with the same scenarios (Centrifugo's JSON protocol: anonymous connect, a subscribe per room, publish; see docs/PERFORMANCE.md)."`
	ServerPID       []int          `name:"server-pid" sep:"," placeholder:"PID" help:"Server process ids, comma separated: report their CPU (% of one core over the measured phase) and RSS (before and after) from /proc."`
	JSON            bool           `name:"json" help:"Print the result as JSON instead of a table."`
	CPUProfile      string         `name:"cpuprofile" type:"path" placeholder:"FILE" help:"Write a CPU profile of chatload itself, from connect to the end of the run, to FILE (go tool pprof)."`
	MemProfile      string         `name:"memprofile" type:"path" placeholder:"FILE" help:"Write a heap profile of chatload itself (allocations over the run and memory in use at its end) to FILE at the end."`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command: it parses args, runs the load and prints the result,
// returning the exit code (2 for a usage error, 1 for a failed run).
func run(args []string, stdout, stderr io.Writer) int {
	var c cli
	exited := -1
	parser, err := newParser(&c, stdout, stderr, func(code int) { exited = code })
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 2
	}
	_, err = parser.Parse(args)
	switch {
	case exited >= 0: // --help
		return exited
	case err != nil:
		fmt.Fprintln(stderr, "chatload:", err)
		return 2
	}
	if c.ListScenarios {
		for _, s := range loadgen.Scenarios() {
			fmt.Fprintf(stdout, "%-3s %s\n", s.Name, s.Summary)
		}
		return 0
	}
	cfg, err := config(c)
	if err == nil {
		cfg = cfg.WithDefaults()
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 2
	}
	if _, err := loadgen.RaiseOpenFiles(loadgen.FilesNeeded(cfg)); err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 1
	}
	prof, err := startProfiles(c.CPUProfile, c.MemProfile)
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if perr := prof.stop(); perr != nil {
		fmt.Fprintln(stderr, "chatload:", perr)
		if err == nil {
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 1
	}
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 1
	}
	return 0
}

// newParser returns the flag parser of c, writing to stdout and stderr and
// calling exit where kong would exit (after --help).
func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	var names []string
	for _, s := range loadgen.Scenarios() {
		names = append(names, s.Name)
	}
	return kong.New(c, kong.Name("chatload"),
		kong.Description("Load generator for chatstream gateways on this machine (docs/PERFORMANCE.md)."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.Vars{
			"scenarios":                strings.Join(names, ", "),
			"default_conns":            strconv.Itoa(loadgen.DefaultConns),
			"default_senders":          strconv.Itoa(loadgen.DefaultSenders),
			"default_rate":             strconv.Itoa(loadgen.DefaultRate),
			"default_text_size":        strconv.Itoa(loadgen.DefaultTextSize),
			"min_text_size":            strconv.Itoa(loadgen.MinTextSize),
			"max_text_size":            strconv.Itoa(loadgen.MaxTextSize),
			"max_warmup":               loadgen.MaxWarmup.String(),
			"default_duration":         loadgen.DefaultDuration.String(),
			"max_duration":             loadgen.MaxDuration.String(),
			"default_drain":            loadgen.DefaultDrain.String(),
			"max_drain":                loadgen.MaxDrain.String(),
			"max_messages":             strconv.Itoa(loadgen.MaxMessagesLimit),
			"default_dial_concurrency": strconv.Itoa(loadgen.DefaultDialConcurrency),
		})
}

// config turns the flags into a run: the scenario's values (or the
// defaults), then every flag given.
func config(c cli) (loadgen.Config, error) {
	urls := strings.Split(c.URL, ",")
	cfg := loadgen.Config{
		URLs: urls, Conns: loadgen.DefaultConns, Rooms: 1, Senders: loadgen.DefaultSenders, Rate: loadgen.DefaultRate,
		TextSize: loadgen.DefaultTextSize, Duration: loadgen.DefaultDuration, Drain: loadgen.DefaultDrain,
	}
	switch {
	case c.Scenario != "":
		s, err := loadgen.LookupScenario(c.Scenario)
		if err != nil {
			return loadgen.Config{}, err
		}
		if !(c.Scale > 0) {
			return loadgen.Config{}, fmt.Errorf("--scale %v, want more than 0", c.Scale)
		}
		cfg = s.Config(urls, c.Scale)
	case c.Scale != 1:
		return loadgen.Config{}, errors.New("--scale needs --scenario")
	}
	override(&cfg.Conns, c.Conns)
	override(&cfg.Rooms, c.Rooms)
	override(&cfg.Senders, c.Senders)
	override(&cfg.Rate, c.Rate)
	override(&cfg.TextSize, c.TextSize)
	override(&cfg.Warmup, c.Warmup)
	override(&cfg.Duration, c.Duration)
	override(&cfg.Drain, c.Drain)
	override(&cfg.MaxMessages, c.MaxMessages)
	override(&cfg.DialConcurrency, c.DialConcurrency)
	if cfg.Senders == 0 && c.Rate == nil {
		cfg.Rate = 0 // --senders 0 alone makes an idle run
	}
	cfg.ServerPIDs = c.ServerPID
	cfg.Protocol = c.Protocol
	return cfg, nil
}

// override sets *dst to *flag when the flag was given.
func override[T any](dst, flag *T) {
	if flag != nil {
		*dst = *flag
	}
}

// profiles are the generator's own profiles of one run.
type profiles struct {
	cpu, mem *os.File // nil when not asked for
}

// startProfiles creates both files before the run, so that a path that
// cannot be written fails before any connection, and starts the CPU
// profile.
func startProfiles(cpuPath, memPath string) (*profiles, error) {
	p := &profiles{}
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close() // the profile error is the one to report
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		p.cpu = f
	}
	if memPath != "" {
		f, err := os.Create(memPath)
		if err != nil {
			p.stopCPU()
			return nil, fmt.Errorf("memory profile: %w", err)
		}
		p.mem = f
	}
	return p, nil
}

// stopCPU stops and closes the CPU profile, if any.
func (p *profiles) stopCPU() error {
	if p.cpu == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.cpu.Close()
	p.cpu = nil
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	return nil
}

// stop ends the CPU profile and writes the heap profile, after a
// collection so that its in-use figures are current.
func (p *profiles) stop() error {
	err := p.stopCPU()
	if p.mem != nil {
		runtime.GC()
		werr := pprof.WriteHeapProfile(p.mem)
		if cerr := p.mem.Close(); werr == nil {
			werr = cerr
		}
		p.mem = nil
		if werr != nil {
			err = errors.Join(err, fmt.Errorf("memory profile: %w", werr))
		}
	}
	return err
}
