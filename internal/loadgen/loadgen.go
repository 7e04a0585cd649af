// Package loadgen drives chatstream gateways with real WebSocket clients and
// measures what a room's members see: deliveries per second, send →
// delivery and send → ack latency, loss, refused sends and, given the
// servers' process ids, their CPU and memory. Scenarios (scenario.go) are
// the standard shapes of docs/PERFORMANCE.md.
//
// A run has four phases: connect (every receiver, then every sender, each
// dialled and joined to its rooms), warm-up (sending at the run's rate,
// not measured), the measured phase (sending, or holding idle connections)
// and drain (waiting, up to a bound, for the acks and deliveries of the
// measured sends still in flight). Every phase is bounded in time, sends
// are bounded in count, and only loopback addresses are dialled.
//
// Goroutines: one reader per connection, from when it is joined (so that
// the server's pings are answered however long the connect phase takes),
// which owns that connection's
// counters, bitsets and latency histogram until it returns (only its
// delivery count is shared, atomically, with the drain); one sending
// goroutine per sender, the only writer of its socket until the run closes
// it (but for the answers to Centrifugo's pings, which the sender's reader
// writes under its write lock); and the caller's, which paces the phases
// and, once every other goroutine has returned, merges their counters into
// the Result.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults of Config, also used by chatload's flags.
const (
	// DefaultConns is the number of receiving connections.
	DefaultConns = 100
	// DefaultSenders is chatload's number of sending connections (a zero
	// Config.Senders is an idle run).
	DefaultSenders = 10
	// DefaultRate is the number of messages per second, in total.
	DefaultRate = 100
	// DefaultTextSize is the size of each message's text, in bytes.
	DefaultTextSize = 100
	// DefaultDuration is the length of the measured phase.
	DefaultDuration = 10 * time.Second
	// DefaultDrain bounds the wait for acks and deliveries after it.
	DefaultDrain = 5 * time.Second
	// DefaultDialConcurrency is the number of connections opened at once.
	DefaultDialConcurrency = 32
)

// Bounds of Config: every run ends within ConnectTimeout + MaxWarmup +
// MaxDuration + MaxDrain and sends at most MaxMessagesLimit messages.
const (
	// MaxDuration bounds the measured phase.
	MaxDuration = 10 * time.Minute
	// MaxWarmup bounds the warm-up.
	MaxWarmup = time.Minute
	// MaxDrain bounds the drain.
	MaxDrain = time.Minute
	// MaxMessagesLimit bounds Config.MaxMessages.
	MaxMessagesLimit = 20_000_000
	// MaxConnections bounds receivers plus senders.
	MaxConnections = 50_000
	// MaxRoomsPerSender is the server's default rooms per connection
	// (--max-rooms): Senders must be at least Rooms / MaxRoomsPerSender.
	MaxRoomsPerSender = 100
	// MinTextSize is the smallest text size: the text starts with a
	// header (phase, send time, sender, number) of at most 31 bytes.
	MinTextSize = 40
	// MaxTextSize is the largest text size accepted here; the server's
	// own limit (--max-text, 4096 by default) refuses larger texts with
	// too_large.
	MaxTextSize = 64 << 10
)

// Timing of connections.
const (
	// ConnectTimeout bounds the connect phase: opening and joining every
	// connection.
	ConnectTimeout = 3 * time.Minute
	// JoinTimeout bounds one connection's handshake and its joins.
	JoinTimeout = 10 * time.Second
	// WriteWait is the deadline of each write.
	WriteWait = 10 * time.Second
	// CloseWait is the deadline of the close frames sent at the end.
	CloseWait = time.Second
	// ReadSlack is added to the run's planned end for every socket's read
	// deadline, so that a reader cannot outlive a run that went wrong.
	ReadSlack = time.Minute
	// ReadLimit is the largest server message read: a batch of about 64 KiB,
	// or a page of history of up to 256 KiB.
	ReadLimit = 1 << 20
	// startDelay separates the last connection from the first send, so
	// that every sender starts on the same schedule.
	startDelay = 50 * time.Millisecond
	// drainPoll is how often the drain checks for completion.
	drainPoll = 5 * time.Millisecond
)

// messageBufferSize is the first size of each reader's buffer (a
// frameConn's, or the message buffer of a connection the websocket library
// reads), which grows to the largest message read (at most ReadLimit) and
// is reused for every message. Larger first sizes (32 KiB each for scenario
// B, in the library's reader) took about 30% fewer reads on a loaded
// machine but measured a higher delivery latency in every paired run, so
// they are not used.
const messageBufferSize = 4 << 10

// Config describes a run. A zero field takes the default in its comment.
type Config struct {
	// URLs are the gateways' base URLs (http://host:port, or ws://), on
	// loopback addresses only; connections are spread over them in turn.
	// Required.
	URLs []string `json:"urls"`
	// Name labels the run in its Result (a scenario's name). Default none.
	Name string `json:"scenario,omitempty"`
	// Conns is the number of receiving connections, spread evenly over the
	// rooms (receiver i joins room i mod Rooms). Receivers only read.
	// Default DefaultConns; at least Rooms.
	Conns int `json:"receivers"`
	// Rooms is the number of rooms. Default 1.
	Rooms int `json:"rooms"`
	// Senders is the number of sending connections. With g = min(Senders,
	// Rooms), sender s joins every room r with r mod g = s mod g and sends
	// to its rooms in turn; senders are not counted as receivers. Default
	// none: an idle run, which only holds the receivers for Duration.
	Senders int `json:"senders"`
	// Rate is the number of messages per second sent, in total, each sender
	// sending Rate/Senders on its own schedule. Default DefaultRate (with
	// senders).
	Rate float64 `json:"rate"`
	// TextSize is the exact size of each message's text, in bytes. Default
	// DefaultTextSize; from MinTextSize to MaxTextSize.
	TextSize int `json:"text_size"`
	// Warmup is a phase of sending at Rate before the measured phase; its
	// messages, acks and deliveries are not measured. Default none; at most
	// MaxWarmup.
	Warmup time.Duration `json:"warmup_ns"`
	// Duration is the measured phase: sending, or holding the connections
	// of an idle run. Default DefaultDuration; at most MaxDuration.
	Duration time.Duration `json:"duration_ns"`
	// Drain bounds the wait, after the measured phase, for the acks and
	// deliveries of measured sends still in flight. Default DefaultDrain;
	// at most MaxDrain.
	Drain time.Duration `json:"drain_ns"`
	// MaxMessages bounds the messages sent, warm-up included. Default
	// Rate × (Warmup + Duration), rounded up; at most MaxMessagesLimit.
	MaxMessages int `json:"max_messages"`
	// ServerPIDs are the servers' process ids, whose CPU time and RSS are
	// read from /proc (Linux) before and after. Default none.
	ServerPIDs []int `json:"server_pids,omitempty"`
	// DialConcurrency is the number of connections opened at once. Default
	// DefaultDialConcurrency.
	DialConcurrency int `json:"dial_concurrency"`
	// Protocol is the protocol the clients speak: ProtocolChatstream or
	// ProtocolCentrifugo. Default ProtocolChatstream.
	Protocol string `json:"protocol"`
}

// WithDefaults returns c with every zero field set to its default, as Run
// applies them; a caller validates the result before its own preparations.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Rooms == 0 {
		c.Rooms = 1
	}
	if c.Rate == 0 && c.Senders > 0 {
		c.Rate = DefaultRate
	}
	if c.TextSize == 0 {
		c.TextSize = DefaultTextSize
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.MaxMessages == 0 && c.Senders > 0 {
		n := c.Rate*(c.Warmup+c.Duration).Seconds() + 1
		c.MaxMessages = int(min(n, MaxMessagesLimit))
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if c.Protocol == "" {
		c.Protocol = ProtocolChatstream
	}
}

// Validate reports the first field of c that is out of bounds, or a URL that
// is not a loopback address (wrapping ErrNotLoopback). It does not change c;
// Run validates after applying the defaults.
func (c Config) Validate() error {
	if len(c.URLs) == 0 {
		return errors.New("loadgen: no URL")
	}
	for _, u := range c.URLs {
		if _, err := wsURL(u); err != nil {
			return err
		}
	}
	switch {
	case c.Rooms < 1:
		return fmt.Errorf("loadgen: rooms %d, want at least 1", c.Rooms)
	case c.Conns < c.Rooms:
		return fmt.Errorf("loadgen: %d receivers for %d rooms, want at least one receiver per room", c.Conns, c.Rooms)
	case c.Senders < 0:
		return fmt.Errorf("loadgen: senders %d, want 0 (idle) or more", c.Senders)
	case c.Conns+c.Senders > MaxConnections:
		return fmt.Errorf("loadgen: %d connections, want at most %d", c.Conns+c.Senders, MaxConnections)
	case c.Senders > 0 && (c.Rooms+c.Senders-1)/c.Senders > MaxRoomsPerSender:
		return fmt.Errorf("loadgen: %d senders for %d rooms put a sender in more than %d rooms, the server's default limit; use at least %d senders",
			c.Senders, c.Rooms, MaxRoomsPerSender, (c.Rooms+MaxRoomsPerSender-1)/MaxRoomsPerSender)
	case c.Senders > 0 && !(c.Rate > 0):
		return fmt.Errorf("loadgen: rate %v, want more than 0 messages per second", c.Rate)
	case c.Senders == 0 && c.Rate > 0:
		return fmt.Errorf("loadgen: rate %v with no senders; an idle run sends nothing", c.Rate)
	case c.TextSize < MinTextSize || c.TextSize > MaxTextSize:
		return fmt.Errorf("loadgen: text size %d, want %d to %d bytes", c.TextSize, MinTextSize, MaxTextSize)
	case c.Warmup < 0 || c.Warmup > MaxWarmup:
		return fmt.Errorf("loadgen: warm-up %v, want 0 to %v", c.Warmup, MaxWarmup)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("loadgen: duration %v, want more than 0 and at most %v", c.Duration, MaxDuration)
	case c.Drain < 0 || c.Drain > MaxDrain:
		return fmt.Errorf("loadgen: drain %v, want 0 to %v", c.Drain, MaxDrain)
	case c.MaxMessages < 0 || c.MaxMessages > MaxMessagesLimit:
		return fmt.Errorf("loadgen: max messages %d, want 0 to %d", c.MaxMessages, MaxMessagesLimit)
	case c.DialConcurrency < 1:
		return fmt.Errorf("loadgen: dial concurrency %d, want at least 1", c.DialConcurrency)
	case c.Protocol != "" && c.Protocol != ProtocolChatstream && c.Protocol != ProtocolCentrifugo:
		return fmt.Errorf("loadgen: protocol %q, want %s or %s", c.Protocol, ProtocolChatstream, ProtocolCentrifugo)
	}
	for _, pid := range c.ServerPIDs {
		if pid <= 0 {
			return fmt.Errorf("loadgen: server pid %d, want a process id", pid)
		}
	}
	return nil
}

// receiver is a connection that only reads. Its fields after ws are owned
// by its read goroutine until that returns.
type receiver struct {
	ws   *websocket.Conn
	room int

	got        []bitset  // measured messages received, by sender, by number; nil before the first
	deliveries int64     // measured message frames
	duplicates int64     // measured message frames received before
	foreign    int64     // message frames that are not this run's
	last       time.Time // last measured delivery
	closed     string    // how the server closed it, "" if it did not
	latency    histogram // send → delivery of measured messages

	// delivered is deliveries for the drain, which reads it while the
	// reader runs; one counter per receiver, so that readers never
	// contend for a shared one.
	delivered atomic.Int64
}

// sender is a connection that sends to its rooms and reads its acks. The
// send counters are owned by its sending goroutine, the rest after ws by
// its read goroutine, each until that goroutine returns.
type sender struct {
	index int
	ws    *websocket.Conn
	rooms []int // rooms joined; a room's position is its slot

	warmupSent, sent, writeErrors int64

	// writeMu orders the sending goroutine's writes with the reader's
	// answers to Centrifugo's pings.
	writeMu sync.Mutex
	// nextID is the last Centrifugo command id used, owned by the
	// sending goroutine; pending holds the publishes not yet answered,
	// by id.
	nextID    uint32
	pendingMu sync.Mutex
	pending   map[uint32]pendingSend

	acked   []bitset // measured messages acked, by slot, by number
	acks    int64
	refused map[string]int64 // measured sends refused, by error code
	closed  string
	latency histogram // send → ack of its measured sends
}

// run is the state of one Run.
type run struct {
	cfg    Config
	id     string // prefixes rooms and users, so that runs never meet
	urls   []string
	dialer *websocket.Dialer
	group  int     // min(Senders, Rooms)
	inRoom []int64 // receivers per room

	receivers []*receiver
	senders   []*sender

	// base is the origin of send times in texts and refs (monotonic);
	// set before any reader starts.
	base time.Time
	// readers are the connections' read goroutines, each started once its
	// connection is joined, so that the server's pings are answered
	// however long the connect phase takes.
	readers sync.WaitGroup
	// onReceiverLine and onSenderLine handle a line of a receiver's and a
	// sender's in the run's protocol.
	onReceiverLine func(rc *receiver, line []byte, now time.Time)
	onSenderLine   func(s *sender, line []byte, now time.Time)
	// measuredStart is when the measured phase starts; set before the
	// senders start and read-only after.
	measuredStart time.Time

	measuring atomic.Bool // from measuredStart: errors without a ref count as measured
	stopping  atomic.Bool // the run is closing its connections: read errors are expected
	left      atomic.Int64
	// Progress of the measured sends, for the drain (deliveries are
	// counted per receiver).
	sent, answered, expected atomic.Int64
}

// Run performs one load run against the gateways and returns what it
// measured. It returns an error when the configuration is invalid, a
// server pid cannot be read, or a connection cannot be opened and joined;
// when ctx ends early it returns what was measured so far, marked
// Interrupted.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	r := &run{
		cfg:       cfg,
		id:        "lg" + strconv.FormatUint(rand.Uint64()%(1<<30), 36),
		group:     max(1, min(cfg.Senders, cfg.Rooms)),
		inRoom:    make([]int64, cfg.Rooms),
		receivers: make([]*receiver, cfg.Conns),
		senders:   make([]*sender, cfg.Senders),
		dialer: &websocket.Dialer{
			NetDialContext:   frameDialer(&net.Dialer{Timeout: JoinTimeout, Control: loopbackOnly}),
			HandshakeTimeout: JoinTimeout,
		},
	}
	for _, u := range cfg.URLs {
		w, _ := wsURL(u) // checked by Validate
		r.urls = append(r.urls, w)
	}
	for i := range cfg.Conns {
		r.inRoom[i%cfg.Rooms]++
	}
	r.left.Store(int64(cfg.MaxMessages))

	before, err := readProcs(cfg.ServerPIDs)
	if err != nil {
		return Result{}, err
	}
	r.onReceiverLine, r.onSenderLine = r.onChatstreamReceiverLine, r.onChatstreamSenderLine
	if cfg.Protocol == ProtocolCentrifugo {
		r.onReceiverLine, r.onSenderLine = r.onCentrifugoReceiverLine, r.onCentrifugoSenderLine
	}
	r.base = time.Now()
	connectStart := time.Now()
	if err := r.connect(ctx); err != nil {
		r.stopping.Store(true)
		r.closeAll()
		r.readers.Wait()
		return Result{}, err
	}
	res := Result{Config: cfg, Connections: cfg.Conns + cfg.Senders, ConnectTime: time.Since(connectStart)}

	t0 := time.Now().Add(startDelay)
	r.measuredStart = t0.Add(cfg.Warmup)
	readDeadline := r.measuredStart.Add(cfg.Duration + cfg.Drain + ReadSlack)
	for _, rc := range r.receivers {
		_ = rc.ws.SetReadDeadline(readDeadline) // an error shows on the next read
	}
	for _, s := range r.senders {
		_ = s.ws.SetReadDeadline(readDeadline) // an error shows on the next read
	}
	var senders sync.WaitGroup
	for _, s := range r.senders {
		senders.Go(func() { r.sendLoop(ctx, s, t0) })
	}

	sleepUntil(ctx, r.measuredStart)
	r.measuring.Store(true)
	// A server that cannot be read any more (it exited) does not end the
	// run: what the clients saw is worth reporting.
	start, startErr := readProcs(cfg.ServerPIDs)
	self, selfErr := ReadProc(os.Getpid())
	if cfg.Senders == 0 {
		sleepUntil(ctx, r.measuredStart.Add(cfg.Duration))
	}
	senders.Wait()
	sendEnd := time.Now()
	res.Drained = r.drain(ctx, sendEnd.Add(cfg.Drain))
	res.DrainTime = time.Since(sendEnd)
	end, endErr := readProcs(cfg.ServerPIDs)
	if selfEnd, err := ReadProc(os.Getpid()); selfErr == nil && err == nil {
		res.GeneratorCPUPercent = cpuPercent(self, selfEnd)
	}
	res.Measured = time.Since(r.measuredStart)
	res.Interrupted = ctx.Err() != nil

	r.stopping.Store(true)
	r.closeAll()
	r.readers.Wait()
	r.collect(&res, sendEnd)
	if err := errors.Join(startErr, endErr); err != nil {
		res.Warnings = append(res.Warnings, "server statistics: "+err.Error())
	} else {
		res.Servers, res.RSSPerConn = serverStats(before, start, end, res.Connections)
	}
	return res, nil
}

// connect opens and joins every receiver, then every sender, at most
// DialConcurrency at once, within ConnectTimeout.
func (r *run) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	err := r.each(ctx, r.cfg.Conns, func(ctx context.Context, i int) error {
		room := i % r.cfg.Rooms
		ws, err := r.dial(ctx, r.urls[i%len(r.urls)], r.id+"-r"+strconv.Itoa(i), []int{room})
		if err != nil {
			return err
		}
		rc := &receiver{ws: ws, room: room}
		r.receivers[i] = rc
		r.readers.Go(func() {
			rc.closed = r.readLoop(ws, func(line []byte, now time.Time) { r.onReceiverLine(rc, line, now) })
		})
		return nil
	})
	if err != nil {
		return err
	}
	return r.each(ctx, r.cfg.Senders, func(ctx context.Context, s int) error {
		var rooms []int
		for room := s % r.group; room < r.cfg.Rooms; room += r.group {
			rooms = append(rooms, room)
		}
		ws, err := r.dial(ctx, r.urls[(r.cfg.Conns+s)%len(r.urls)], r.id+"-s"+strconv.Itoa(s), rooms)
		if err != nil {
			return err
		}
		snd := &sender{index: s, ws: ws, rooms: rooms, acked: make([]bitset, len(rooms)), refused: make(map[string]int64)}
		if r.cfg.Protocol == ProtocolCentrifugo {
			snd.nextID = uint32(len(rooms) + 1) // the connect and the subscribes
			snd.pending = make(map[uint32]pendingSend)
		}
		r.senders[s] = snd
		r.readers.Go(func() {
			snd.closed = r.readLoop(ws, func(line []byte, now time.Time) { r.onSenderLine(snd, line, now) })
		})
		return nil
	})
}

// each calls f for 0..n-1, DialConcurrency at a time, and returns the first
// error (after which no new call starts).
func (r *run) each(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, r.cfg.DialConcurrency)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("loadgen: connecting: %w", context.Cause(ctx))
	}
	return first
}

// joinReply is the part of a server frame the connect phase reads.
type joinReply struct {
	Type    string `json:"type"`
	Room    string `json:"room"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// dial opens a connection as user and joins it to rooms in the run's
// protocol. Its read deadline is then the end of the longest connect
// phase, until the run sets its own.
func (r *run) dial(ctx context.Context, url, user string, rooms []int) (*websocket.Conn, error) {
	dial := r.dialJoin
	if r.cfg.Protocol == ProtocolCentrifugo {
		dial = r.dialCentrifugo
	}
	ws, err := dial(ctx, url, user, rooms)
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(ConnectTimeout + ReadSlack)) // an error shows on the next read
	return ws, nil
}

// open dials url+path within JoinTimeout and gives the connection the
// read limit, and read and write deadlines JoinTimeout away for the joins.
func (r *run) open(ctx context.Context, url, path string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, JoinTimeout)
	defer cancel()
	ws, resp, err := r.dialer.DialContext(ctx, url+path, nil)
	if err != nil {
		return nil, dialError(url, resp, err, r.cfg.Protocol == ProtocolChatstream)
	}
	ws.SetReadLimit(ReadLimit)
	deadline := time.Now().Add(JoinTimeout)
	_ = ws.SetReadDeadline(deadline)  // an error shows on the next read
	_ = ws.SetWriteDeadline(deadline) // an error shows on the next write
	return ws, nil
}

// dialJoin opens a connection as user and joins rooms one at a time, each
// with no history, waiting for each joined, so that no delivery is expected
// before membership.
func (r *run) dialJoin(ctx context.Context, url, user string, rooms []int) (*websocket.Conn, error) {
	ws, err := r.open(ctx, url, "/ws?user="+user)
	if err != nil {
		return nil, err
	}
	for _, room := range rooms {
		name := r.roomName(room)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+name+`","history":0}`)); err != nil {
			_ = ws.Close() // the connection is useless
			return nil, fmt.Errorf("loadgen: join %s as %s: %w", name, user, err)
		}
		if err := awaitJoined(ws, name); err != nil {
			_ = ws.Close() // the connection is useless
			return nil, fmt.Errorf("loadgen: join %s as %s: %w", name, user, err)
		}
	}
	return ws, nil
}

// awaitJoined reads frames until the joined of room, or an error frame.
func awaitJoined(ws *websocket.Conn, room string) error {
	var answer error
	joined := func(data []byte) bool {
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			var f joinReply
			if json.Unmarshal(line, &f) != nil {
				continue
			}
			switch {
			case f.Type == "joined" && f.Room == room:
				return false
			case f.Type == "error":
				answer = fmt.Errorf("server answered %s: %s", f.Code, f.Message)
				return false
			}
		}
		return true
	}
	if err := readUntil(ws, joined); err != nil {
		return err
	}
	return answer
}

// readUntil hands ws's messages to handle until it returns false, or
// reading fails.
func readUntil(ws *websocket.Conn, handle func(data []byte) bool) error {
	if fc, ok := ws.NetConn().(*frameConn); ok {
		return fc.messages(ws, ReadLimit, handle)
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if !handle(data) {
			return nil
		}
	}
}

// dialError explains a failed dial; a refused handshake names the server
// limits to lift, when the server is chatstream.
func dialError(url string, resp *http.Response, err error, chatstream bool) error {
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		return fmt.Errorf("loadgen: dial %s: %w", url, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256)) // best effort: the reason for people
	hint := ""
	if chatstream && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		hint = " (the server limits connections and handshakes per address; start it with --max-conns-per-ip and --handshake-burst above the run's connections, see docs/PERFORMANCE.md)"
	}
	return fmt.Errorf("loadgen: dial %s: %w: %s: %s%s", url, err, resp.Status, bytes.TrimSpace(body), hint)
}

func (r *run) roomName(room int) string { return r.id + "-" + strconv.Itoa(room) }

// Phases of a message, the first byte of its text and ref.
const (
	phaseWarmup   = 'w'
	phaseMeasured = 'm'
)

// sendLoop sends sender s's messages on its schedule, from t0 until the
// end of the measured phase, MaxMessages or ctx: message k is due at
// t0 + offset + k × interval, with the senders' offsets spread over one
// interval. A sender that falls behind sends at once (latencies are from
// the actual send); a write error ends it.
func (r *run) sendLoop(ctx context.Context, s *sender, t0 time.Time) {
	interval := float64(time.Second) * float64(r.cfg.Senders) / r.cfg.Rate
	offset := interval * float64(s.index) / float64(r.cfg.Senders)
	end := r.measuredStart.Add(r.cfg.Duration)
	warm, next := 0, make([]int, len(s.rooms)) // message numbers: warm-up, and measured by slot
	buf := make([]byte, 0, 128+r.cfg.TextSize)
	centrifugo := r.cfg.Protocol == ProtocolCentrifugo
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := 0; ; k++ {
		due := t0.Add(time.Duration(offset + float64(k)*interval))
		if !due.Before(end) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		if ctx.Err() != nil || r.left.Add(-1) < 0 {
			return
		}
		slot := k % len(s.rooms)
		phase, n := byte(phaseMeasured), next[slot]
		if due.Before(r.measuredStart) {
			phase, n = phaseWarmup, warm
		}
		now := time.Now()
		if centrifugo {
			buf = r.appendPublish(buf[:0], s, s.rooms[slot], slot, n, phase, now.Sub(r.base))
		} else {
			buf = r.appendSend(buf[:0], s.index, s.rooms[slot], slot, n, phase, now.Sub(r.base))
		}
		s.writeMu.Lock()
		_ = s.ws.SetWriteDeadline(now.Add(WriteWait)) // an error shows on the write
		err := s.ws.WriteMessage(websocket.TextMessage, buf)
		s.writeMu.Unlock()
		if err != nil {
			s.writeErrors++
			return
		}
		if phase == phaseWarmup {
			warm++
			s.warmupSent++
			continue
		}
		next[slot]++
		s.sent++
		r.sent.Add(1)
	}
}

// appendSend appends a send frame. The text is "<phase> <ns> <sender> <n> "
// padded with x to TextSize bytes, where ns is the send time since r.base;
// the ref, unique per user and room as idempotency needs, is
// "<phase><slot>.<n>.<ns>".
func (r *run) appendSend(buf []byte, sender, room, slot, n int, phase byte, at time.Duration) []byte {
	buf = append(buf, `{"type":"send","room":"`...)
	buf = append(buf, r.id...)
	buf = append(buf, '-')
	buf = strconv.AppendInt(buf, int64(room), 10)
	buf = append(buf, `","text":"`...)
	buf = appendText(buf, r.cfg.TextSize, sender, n, phase, at)
	buf = append(buf, `","ref":"`...)
	buf = appendRef(buf, phase, slot, n, at)
	return append(buf, `"}`...)
}

// appendText appends a message's text of size bytes: "<phase> <ns>
// <sender> <n> " padded with x.
func appendText(buf []byte, size, sender, n int, phase byte, at time.Duration) []byte {
	start := len(buf)
	buf = append(buf, phase, ' ')
	buf = strconv.AppendInt(buf, int64(at), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(sender), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, ' ')
	for len(buf)-start < size {
		buf = append(buf, 'x')
	}
	return buf
}

// appendRef appends a send's ref: "<phase><slot>.<n>.<ns>".
func appendRef(buf []byte, phase byte, slot, n int, at time.Duration) []byte {
	buf = append(buf, phase)
	buf = strconv.AppendInt(buf, int64(slot), 10)
	buf = append(buf, '.')
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, '.')
	return strconv.AppendInt(buf, int64(at), 10)
}

// readLoop reads ws's messages until it fails, handing each frame line to
// handle, and returns how the server closed it: "" when the run was
// stopping, else the close code, "1006" without a close frame, or "timeout".
// A plain connection is read by its frameConn; any other (TLS) through the
// websocket library, into one buffer, reused. Either buffer grows to the
// largest message (at most ReadLimit); all lines of a message share one
// time.Now.
func (r *run) readLoop(ws *websocket.Conn, handle func(line []byte, now time.Time)) string {
	lines := func(msg []byte) bool {
		now := time.Now()
		for rest := msg; len(rest) > 0; {
			line := rest
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				line, rest = rest[:i], rest[i+1:]
			} else {
				rest = nil
			}
			if len(line) > 0 {
				handle(line, now)
			}
		}
		return true
	}
	var err error
	if fc, ok := ws.NetConn().(*frameConn); ok {
		err = fc.messages(ws, ReadLimit, lines)
	} else {
		buf := make([]byte, 0, messageBufferSize)
		for err == nil {
			var rd io.Reader
			if _, rd, err = ws.NextReader(); err == nil {
				if buf, err = readMessage(rd, buf[:0]); err == nil {
					lines(buf)
				}
			}
		}
	}
	if r.stopping.Load() {
		return ""
	}
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return strconv.Itoa(ce.Code)
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return strconv.Itoa(websocket.CloseAbnormalClosure)
}

// readMessage appends the rest of a message from rd to buf, growing it
// only when full.
func readMessage(rd io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return buf, err
		}
	}
}

var (
	messagePrefix = []byte(`{"type":"message",`)
	ackPrefix     = []byte(`{"type":"ack",`)
	textKey       = []byte(`"text":"`)
	refKey        = []byte(`"ref":"`)
)

// stringField returns the value of the JSON string field key ("name":")
// in line, up to its closing quote. Only for values this run made, which
// have no escapes.
func stringField(line, key []byte) ([]byte, bool) {
	i := bytes.Index(line, key)
	if i < 0 {
		return nil, false
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// serverFrame is the part of a frame the slow path decodes.
type serverFrame struct {
	Type string `json:"type"`
	Code string `json:"code"`
	Ref  string `json:"ref"`
	Text string `json:"text"`
}

// onChatstreamReceiverLine handles one frame on a receiver. Message frames, the bulk
// of the traffic, are recognised without a JSON decode so that the
// generator's CPU stays small next to the server's.
func (r *run) onChatstreamReceiverLine(rc *receiver, line []byte, now time.Time) {
	var text []byte
	if bytes.HasPrefix(line, messagePrefix) {
		text, _ = stringField(line, textKey)
	} else {
		var f serverFrame
		if json.Unmarshal(line, &f) != nil || f.Type != "message" {
			return // joined, presence and the like
		}
		text = []byte(f.Text)
	}
	r.delivery(rc, text, now)
}

// delivery counts a message with text that reached receiver rc at now.
func (r *run) delivery(rc *receiver, text []byte, now time.Time) {
	phase, at, sender, n, ok := parseText(text)
	if !ok || sender >= len(r.senders) {
		rc.foreign++
		return
	}
	if phase != phaseMeasured {
		return
	}
	rc.latency.record(now.Sub(r.base) - at)
	rc.deliveries++
	rc.last = now
	rc.delivered.Add(1)
	if rc.got == nil {
		rc.got = make([]bitset, len(r.senders))
	}
	if rc.got[sender].add(n) {
		rc.duplicates++
	}
}

// onChatstreamSenderLine handles one frame on a sender: acks and refusals of its
// measured sends. Its own rooms' messages are skipped.
func (r *run) onChatstreamSenderLine(s *sender, line []byte, now time.Time) {
	if bytes.HasPrefix(line, messagePrefix) {
		return
	}
	if bytes.HasPrefix(line, ackPrefix) {
		ref, _ := stringField(line, refKey)
		phase, slot, n, at, ok := parseRef(ref)
		if ok {
			r.acked(s, phase, slot, n, at, now)
		}
		return
	}
	var f serverFrame
	if json.Unmarshal(line, &f) != nil || f.Type != "error" {
		return
	}
	phase, _, _, _, ok := parseRef([]byte(f.Ref))
	switch {
	case ok && phase == phaseMeasured:
		r.answered.Add(1)
	case ok:
		return // a warm-up send's refusal
	case !r.measuring.Load():
		return // the frame rate's rate_limited has no ref: counted by when it came
	}
	s.refused[f.Code]++
}

// acked counts the ack, at now, of sender s's message n to its room in
// slot, sent at at; warm-up acks are not counted.
func (r *run) acked(s *sender, phase byte, slot, n int, at time.Duration, now time.Time) {
	if phase != phaseMeasured || slot >= len(s.rooms) {
		return
	}
	s.latency.record(now.Sub(r.base) - at)
	s.acks++
	s.acked[slot].add(n)
	r.answered.Add(1)
	r.expected.Add(r.inRoom[s.rooms[slot]])
}

// parseText reads the header of a text made by appendSend:
// "<phase> <ns> <sender> <n> " and the padding.
func parseText(text []byte) (phase byte, at time.Duration, sender, n int, ok bool) {
	if len(text) < 2 || text[1] != ' ' {
		return 0, 0, 0, 0, false
	}
	ns, rest, ok1 := cutNumber(text[2:], ' ')
	s, rest, ok2 := cutNumber(rest, ' ')
	m, _, ok3 := cutNumber(rest, ' ')
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, 0, false
	}
	return text[0], time.Duration(ns), int(s), int(m), true
}

// parseRef reads a ref made by appendSend: "<phase><slot>.<n>.<ns>".
func parseRef(ref []byte) (phase byte, slot, n int, at time.Duration, ok bool) {
	if len(ref) < 2 {
		return 0, 0, 0, 0, false
	}
	sl, rest, ok1 := cutNumber(ref[1:], '.')
	m, rest, ok2 := cutNumber(rest, '.')
	ns, ok3 := atoi(rest)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, 0, false
	}
	return ref[0], int(sl), int(m), time.Duration(ns), true
}

// cutNumber reads the decimal that b starts with, up to sep, and returns
// it and what follows sep; ok is false without sep or a decimal before it.
func cutNumber(b []byte, sep byte) (v int64, rest []byte, ok bool) {
	i := bytes.IndexByte(b, sep)
	if i < 0 {
		return 0, nil, false
	}
	v, ok = atoi(b[:i])
	return v, b[i+1:], ok
}

// atoi parses a non-negative decimal of at most 18 digits.
func atoi(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// drain waits until every measured send is answered and every expected
// delivery has arrived, until deadline, or until ctx ends, and reports
// whether it completed. (A send answered unavailable whose message was
// stored after all is delivered without being expected; the loss count,
// from the bitsets, is exact regardless.)
func (r *run) drain(ctx context.Context, deadline time.Time) bool {
	for {
		if r.answered.Load() >= r.sent.Load() && r.delivered() >= r.expected.Load() {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(drainPoll)
	}
}

// delivered returns the measured deliveries so far, over every receiver.
func (r *run) delivered() int64 {
	var n int64
	for _, rc := range r.receivers {
		n += rc.delivered.Load()
	}
	return n
}

// closeAll says goodbye on every open connection and closes it; readers
// then return. Safe to call more than once.
func (r *run) closeAll() {
	deadline := time.Now().Add(CloseWait)
	bye := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "load run over")
	closeOne := func(ws *websocket.Conn) {
		_ = ws.WriteControl(websocket.CloseMessage, bye, deadline) // best effort: the socket closes anyway
		_ = ws.Close()                                             // a second close only returns an error
	}
	for _, rc := range r.receivers {
		if rc != nil {
			closeOne(rc.ws)
		}
	}
	for _, s := range r.senders {
		if s != nil {
			closeOne(s.ws)
		}
	}
}

// sleepUntil sleeps until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// readProcs samples every pid.
func readProcs(pids []int) ([]ProcSample, error) {
	out := make([]ProcSample, 0, len(pids))
	for _, pid := range pids {
		s, err := ReadProc(pid)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
