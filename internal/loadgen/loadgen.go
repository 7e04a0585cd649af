// Package loadgen drives chatstream gateways with real WebSocket clients and
// measures delivery throughput and end-to-end latency. Every run is bounded
// in time and in message count.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Config describes a run. A zero field takes the default in its comment.
type Config struct {
	// URLs are the gateways' base URLs (http://host:port); connections are
	// spread over them round-robin. Required.
	URLs []string
	// Conns is the number of receiving connections. Default 100.
	Conns int
	// Rooms is the number of rooms the connections are spread over. Default 1.
	Rooms int
	// Senders is the number of sending connections (each also a member of
	// its room). Default 10.
	Senders int
	// Rate is the total number of messages per second sent. Default 100.
	Rate float64
	// Duration bounds the sending phase. Default 10s.
	Duration time.Duration
	// MaxMessages bounds the messages sent. Default 100,000.
	MaxMessages int
	// Drain is how long receivers keep reading after the last send. Default 2s.
	Drain time.Duration
	// TextSize pads each message's text to about this many bytes. Default 64.
	TextSize int
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = 100
	}
	if c.Rooms == 0 {
		c.Rooms = 1
	}
	if c.Senders == 0 {
		c.Senders = 10
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = 100_000
	}
	if c.Drain == 0 {
		c.Drain = 2 * time.Second
	}
	if c.TextSize == 0 {
		c.TextSize = 64
	}
}

// Result is what a run measured.
type Result struct {
	Sent, Acked, Errors int64
	// Deliveries counts message frames received by all connections;
	// Expected is what they should have received for the acked messages.
	Deliveries, Expected int64
	// Disconnects counts connections the server closed during the run.
	Disconnects int64
	Elapsed     time.Duration
	// Latency percentiles of send → delivery, over every delivery.
	P50, P90, P99, Max time.Duration
}

// DeliveriesPerSecond is the delivery throughput over the sending phase.
func (r Result) DeliveriesPerSecond() float64 {
	return float64(r.Deliveries) / r.Elapsed.Seconds()
}

// String formats the result for people.
func (r Result) String() string {
	return fmt.Sprintf("sent %d acked %d errors %d | deliveries %d of %d expected (%.0f/s) | disconnects %d | latency p50 %v p90 %v p99 %v max %v",
		r.Sent, r.Acked, r.Errors, r.Deliveries, r.Expected, r.DeliveriesPerSecond(), r.Disconnects,
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// maxSamples bounds the latency samples kept.
const maxSamples = 2_000_000

type conn struct {
	ws   *websocket.Conn
	room string
	mu   sync.Mutex // guards writes
}

type run struct {
	cfg       Config
	start     time.Time
	members   []int64 // connections per room
	sent      atomic.Int64
	acked     atomic.Int64
	errs      atomic.Int64
	delivered atomic.Int64
	expected  atomic.Int64
	discon    atomic.Int64

	// mu guards samples.
	mu      sync.Mutex
	samples []time.Duration
	seen    int64
}

// Run performs one load run against the gateways.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if len(cfg.URLs) == 0 {
		return Result{}, errors.New("loadgen: no URL")
	}
	cfg.setDefaults()
	r := &run{cfg: cfg, members: make([]int64, cfg.Rooms)}
	total := cfg.Conns + cfg.Senders
	conns := make([]*conn, 0, total)
	defer func() {
		for _, c := range conns {
			_ = c.ws.Close() // the run is over
		}
	}()
	for i := range total {
		c, err := r.dial(cfg.URLs[i%len(cfg.URLs)], i)
		if err != nil {
			return Result{}, err
		}
		conns = append(conns, c)
	}
	var readers sync.WaitGroup
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	for _, c := range conns {
		readers.Go(func() { r.read(readCtx, c) })
	}
	r.start = time.Now()
	r.send(ctx, conns[cfg.Conns:])
	elapsed := time.Since(r.start)
	// Drain: stop when every send is answered and every expected delivery
	// arrived, or the drain ends.
	deadline := time.Now().Add(cfg.Drain)
	for (r.acked.Load()+r.errs.Load() < r.sent.Load() || r.delivered.Load() < r.expected.Load()) &&
		time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	stopReading()
	for _, c := range conns {
		_ = c.ws.SetReadDeadline(time.Now()) // wakes blocked readers
	}
	readers.Wait()
	return r.result(elapsed), nil
}

func (r *run) dial(base string, i int) (*conn, error) {
	u := strings.Replace(base, "http", "ws", 1) + "/ws?user=" + url.QueryEscape("load-"+strconv.Itoa(i))
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		return nil, fmt.Errorf("loadgen: dial %s: %w", u, err)
	}
	room := i % r.cfg.Rooms
	c := &conn{ws: ws, room: "load-" + strconv.Itoa(room)}
	if err := ws.WriteJSON(map[string]any{"type": "join", "room": c.room, "history": 0}); err != nil {
		return nil, fmt.Errorf("loadgen: join: %w", err)
	}
	// Wait for joined so that no delivery is expected before membership.
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("loadgen: join: %w", err)
		}
		if bytes.Contains(data, []byte(`"type":"joined"`)) {
			break
		}
	}
	r.members[room]++
	return c, nil
}

// send paces sends round-robin over the senders at the configured rate.
func (r *run) send(ctx context.Context, senders []*conn) {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	pad := strings.Repeat("x", max(0, r.cfg.TextSize-40))
	end := r.start.Add(r.cfg.Duration)
	next := time.Now()
	for i := 0; i < r.cfg.MaxMessages && time.Now().Before(end) && ctx.Err() == nil; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		c := senders[i%len(senders)]
		text := strconv.FormatInt(time.Now().UnixNano(), 10) + " " + pad
		c.mu.Lock()
		err := c.ws.WriteJSON(map[string]any{"type": "send", "room": c.room, "text": text, "ref": strconv.Itoa(i)})
		c.mu.Unlock()
		if err != nil {
			r.errs.Add(1)
			continue
		}
		r.sent.Add(1)
	}
}

type frame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Text string `json:"text"`
}

// read counts deliveries and acks and records latencies until ctx ends.
func (r *run) read(ctx context.Context, c *conn) {
	for ctx.Err() == nil {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if ctx.Err() == nil {
				r.discon.Add(1)
			}
			return
		}
		now := time.Now()
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			r.count(c, line, now)
		}
	}
}

var (
	messagePrefix = []byte(`{"type":"message",`)
	textField     = []byte(`"text":"`)
)

// count handles one server frame. Message frames, the bulk of the traffic,
// are recognised without a JSON decode so that the generator's own CPU
// stays small next to the server's.
func (r *run) count(c *conn, line []byte, now time.Time) {
	if bytes.HasPrefix(line, messagePrefix) {
		r.delivered.Add(1)
		if i := bytes.Index(line, textField); i >= 0 {
			rest := line[i+len(textField):]
			if j := bytes.IndexByte(rest, ' '); j > 0 {
				if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
					r.sample(now.Sub(time.Unix(0, ns)))
				}
			}
		}
		return
	}
	var f frame
	if json.Unmarshal(line, &f) != nil {
		return
	}
	switch f.Type {
	case "ack":
		r.acked.Add(1)
		room, _ := strconv.Atoi(strings.TrimPrefix(c.room, "load-"))
		r.expected.Add(r.members[room])
	case "error":
		r.errs.Add(1)
	}
}

func (r *run) sample(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	if len(r.samples) < maxSamples {
		r.samples = append(r.samples, d)
		return
	}
	r.samples[r.seen%maxSamples] = d // once full, newer samples overwrite older ones in turn
}

func (r *run) result(elapsed time.Duration) Result {
	res := Result{
		Sent: r.sent.Load(), Acked: r.acked.Load(), Errors: r.errs.Load(),
		Deliveries: r.delivered.Load(), Expected: r.expected.Load(),
		Disconnects: r.discon.Load(), Elapsed: elapsed,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return res
	}
	slices.Sort(r.samples)
	at := func(p float64) time.Duration { return r.samples[min(len(r.samples)-1, int(p*float64(len(r.samples))))] }
	res.P50, res.P90, res.P99, res.Max = at(0.50), at(0.90), at(0.99), r.samples[len(r.samples)-1]
	return res
}
