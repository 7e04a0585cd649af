// Package redisstore is chatstream's Redis Streams backend: a history stream
// per room, N partition bus streams that every instance follows with its
// own Watermill subscriber (BusSubscriber: fan-out reads of many entries per
// round trip), and a dead-letter stream written by watermill-redisstream's
// publisher.
//
// Key layout (prefix "chat", N = 16 by default):
//
//	chat:{p07}:room:<room>         history of one room (MAXLEN ~ RoomMaxLen, TTL RoomTTL)
//	chat:{p07}:epoch:<room>        the room's epoch (TTL RoomTTL, like its stream)
//	chat:{p07}:sent:<room>:<hash>  a send's record for idempotency (TTL IdempotencyWindow)
//	chat:{p07}:bus                 delivery log of partition 07 (MAXLEN ~ BusMaxLen)
//	chat:{p07}:bus:epoch           the bus's epoch
//	chat:rejected                  dead letters (MAXLEN ~ DeadLetterMaxLen)
//
// A room belongs to partition pipeline.PartitionOf(room, N); the {pNN} hash
// tag keeps a room, its records and its bus in one Redis Cluster slot, so
// one Lua script checks the send's record and writes both streams
// atomically, under one entry ID that is the message's seq.
// Entries use Watermill's layout: _watermill_message_uuid, payload (the
// text) and metadata (a msgpack map of strings, including seq).
package redisstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

//go:embed append.lua
var appendLua string

var appendScript = redis.NewScript(appendLua)

// Config configures a Backend. A zero field takes the default in its comment.
type Config struct {
	// URL selects the Redis: redis://[user:pass@]host:port/db, a comma
	// separated list of host:port addresses for a Redis Cluster, or
	// redis-sentinel://host:port,.../master[/db] for the primary that Redis
	// Sentinels name (SentinelScheme). Required.
	URL string
	// Prefix starts every key. Default DefaultPrefix.
	Prefix string
	// Partitions is the number of bus streams. Default DefaultPartitions
	// (at most MaxPartitions). Every instance
	// sharing a Redis must use the same value.
	Partitions int
	// RoomMaxLen is the approximate number of messages kept per room.
	// Default pipeline.DefaultRoomMaxLen.
	RoomMaxLen int64
	// BusMaxLen is the approximate length of each bus stream. Default
	// DefaultBusMaxLen.
	BusMaxLen int64
	// DeadLetterMaxLen is the approximate length of the dead-letter stream.
	// Default DefaultDeadLetterMaxLen.
	DeadLetterMaxLen int64
	// RoomTTL is how long a room's stream and epoch outlive its last
	// message (at least 99% of it: an append renews the TTL once it has run
	// down by 1%); a room idle for longer is forgotten and its next message
	// starts a new epoch. Default pipeline.DefaultRoomTTL; negative
	// (pipeline.NoRoomTTL): rooms never expire. At least a millisecond.
	RoomTTL time.Duration
	// IdempotencyWindow is how long a send's (user, room, ref) is
	// remembered. Default pipeline.DefaultIdempotencyWindow; negative is
	// refused. At least a millisecond.
	IdempotencyWindow time.Duration
	// MaxBatch caps the appends sent in one pipelined round trip. Default
	// DefaultMaxBatch.
	MaxBatch int
	// InFlight is the number of append round trips in flight at once: as
	// many batcher goroutines, each storing the rooms of a share of the
	// partitions, each with a queue of 4 × MaxBatch appends. With more than
	// one, each room's appends keep their order, but appends of rooms of
	// different batchers may be stored out of the order queued (the
	// pipeline.Store contract asks for queue order). Default
	// DefaultInFlight; at most Partitions.
	InFlight int
	// Timeout bounds one Redis round trip. Default DefaultTimeout.
	Timeout time.Duration
	// WaitReplicas is how many replicas must confirm each batch of appends
	// (WAIT, on the batch's connection) before its senders are acked; a
	// batch that fewer replicas confirm within WaitTimeout is answered
	// pipeline.ErrUnavailable (ErrNotReplicated). Default 0: no WAIT,
	// replication is asynchronous and a failover can lose acked messages.
	WaitReplicas int
	// WaitTimeout bounds the WAIT of a batch. Default DefaultWaitTimeout;
	// less than Timeout.
	WaitTimeout time.Duration
	// Logger receives diagnostics. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config, also used by the command line's flags.
const (
	// DefaultPrefix starts every key.
	DefaultPrefix = "chat"
	// DefaultPartitions is the default number of bus streams.
	DefaultPartitions = 16
	// DefaultBusMaxLen is the default approximate length of a bus stream.
	DefaultBusMaxLen = 10_000
	// DefaultDeadLetterMaxLen is the default approximate length of the
	// dead-letter stream.
	DefaultDeadLetterMaxLen = 10_000
	// DefaultMaxBatch is the default number of appends per round trip.
	DefaultMaxBatch = 128
	// DefaultInFlight is the default number of append round trips in
	// flight at once: one keeps queue order across rooms, and on the
	// 2-core development machine two were not faster (one round trip's
	// batch grows while it waits; see BenchmarkAppendInFlight).
	DefaultInFlight = 1
	// DefaultTimeout is the default bound of one Redis round trip.
	DefaultTimeout = 3 * time.Second
	// MaxPartitions is the largest partition count (two digits in keys).
	MaxPartitions = 100
	// DefaultWaitTimeout is the default bound of the WAIT for replicas.
	DefaultWaitTimeout = time.Second
)

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.RoomMaxLen == 0 {
		c.RoomMaxLen = pipeline.DefaultRoomMaxLen
	}
	if c.BusMaxLen == 0 {
		c.BusMaxLen = DefaultBusMaxLen
	}
	if c.DeadLetterMaxLen == 0 {
		c.DeadLetterMaxLen = DefaultDeadLetterMaxLen
	}
	if c.RoomTTL == 0 {
		c.RoomTTL = pipeline.DefaultRoomTTL
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = pipeline.DefaultIdempotencyWindow
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = DefaultWaitTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work. It does not change c;
// call it on a configuration whose defaults are filled in.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("redisstore: URL is required")
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return fmt.Errorf("redisstore: partitions must be between 1 and %d", MaxPartitions)
	case c.RoomMaxLen <= 0, c.BusMaxLen <= 0, c.DeadLetterMaxLen <= 0, c.MaxBatch <= 0, c.Timeout <= 0:
		return errors.New("redisstore: limits must be positive")
	case c.InFlight < 1 || c.InFlight > c.Partitions:
		return fmt.Errorf("redisstore: in-flight batches must be between 1 and the partitions (%d)", c.Partitions)
	case c.IdempotencyWindow < time.Millisecond:
		return errors.New("redisstore: idempotency window must be at least 1ms")
	case c.RoomTTL >= 0 && c.RoomTTL < time.Millisecond:
		return errors.New("redisstore: room TTL must be at least 1ms (or negative: never)")
	case c.WaitReplicas < 0:
		return errors.New("redisstore: wait replicas must not be negative")
	case c.WaitReplicas > 0 && (c.WaitTimeout < time.Millisecond || c.WaitTimeout >= c.Timeout):
		return fmt.Errorf("redisstore: wait timeout %v must be at least 1ms and less than the timeout %v", c.WaitTimeout, c.Timeout)
	case strings.ContainsAny(c.Prefix, "{} \n"):
		return errors.New("redisstore: prefix must not contain braces or spaces")
	}
	return nil
}

// Keys names the Redis keys of a deployment.
type Keys struct {
	Prefix     string
	Partitions int
}

// tag returns the start of partition p's keys: "<prefix>:{pNN}:".
func (k Keys) tag(p int) string {
	return k.Prefix + ":{p" + string(rune('0'+p/10%10)) + string(rune('0'+p%10)) + "}:"
}

// Room returns the history stream of room.
func (k Keys) Room(room string) string {
	return k.roomIn(pipeline.PartitionOf(room, k.Partitions), room)
}

func (k Keys) roomIn(p int, room string) string { return k.tag(p) + "room:" + room }

// Epoch returns the string key holding room's epoch. It expires with the
// room's stream.
func (k Keys) Epoch(room string) string {
	return k.epochIn(pipeline.PartitionOf(room, k.Partitions), room)
}

func (k Keys) epochIn(p int, room string) string { return k.tag(p) + "epoch:" + room }

// Sent returns the string key recording the send (user, room, ref) for the
// idempotency window: a msgpack array of the room's epoch, the message's
// UUID and its seq. User and ref are hashed (SHA-256 of both, each length
// prefixed, first 128 bits in hex), so no user name appears in a key and no
// two sends share one.
func (k Keys) Sent(room, user, ref string) string {
	return k.sentIn(pipeline.PartitionOf(room, k.Partitions), room, user, ref)
}

func (k Keys) sentIn(p int, room, user, ref string) string {
	// One buffer holds both length-prefixed strings: a single hash write.
	buf := make([]byte, 0, 2*binary.MaxVarintLen64+len(user)+len(ref))
	buf = binary.AppendUvarint(buf, uint64(len(user)))
	buf = append(buf, user...)
	buf = binary.AppendUvarint(buf, uint64(len(ref)))
	buf = append(buf, ref...)
	sum := sha256.Sum256(buf)
	return k.tag(p) + "sent:" + room + ":" + hex.EncodeToString(sum[:16])
}

// Bus returns the bus stream of partition p.
func (k Keys) Bus(p int) string { return k.tag(p) + "bus" }

// BusEpoch returns the string key holding partition p's bus epoch.
func (k Keys) BusEpoch(p int) string { return k.tag(p) + "bus:epoch" }

// BusOf returns the bus stream of room's partition.
func (k Keys) BusOf(room string) string { return k.Bus(pipeline.PartitionOf(room, k.Partitions)) }

// Rejected returns the dead-letter stream.
func (k Keys) Rejected() string { return k.Prefix + ":rejected" }

// Backend stores chat in Redis Streams. It is safe for concurrent use.
type Backend struct {
	cfg  Config
	keys Keys
	log  *slog.Logger
	wlog watermill.LoggerAdapter
	// client serves history, dead letters and tools; appendClient serves
	// appends and never retries; subClient serves the partition
	// subscriptions, each of which pins one connection while it blocks, so
	// its pool is larger than the number of partitions.
	client       redis.UniversalClient
	appendClient redis.UniversalClient
	subClient    redis.UniversalClient
	dead         *redisstream.Publisher

	// lanes queue appends for the batcher goroutines, one lane each
	// (partition p's in lanes[p % InFlight]); a batcher sends whatever has
	// queued while its previous round trip was in flight as one pipelined
	// batch. Append blocks when its lane is full, AppendAsync refuses.
	lanes    []chan appendReq
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	// closeMu guards closed: an append checks it and queues under the read
	// lock, and Close sets it under the write lock before it stops the
	// batcher, so no append is queued after the batcher drained the queue.
	closeMu sync.RWMutex
	closed  bool
}

var _ pipeline.Backend = (*Backend)(nil)

// Options parses a Redis URL (see Config.URL) into client options.
func Options(url string) (*redis.UniversalOptions, error) {
	if strings.HasPrefix(url, SentinelScheme) {
		return sentinelOptions(url)
	}
	if strings.Contains(url, "://") {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
		return &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, Protocol: o.Protocol,
		}, nil
	}
	var addrs []string
	for a := range strings.SplitSeq(url, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("redisstore: %q is neither a redis:// URL nor a host:port list", url)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("redisstore: no address in %q", url)
	}
	return &redis.UniversalOptions{Addrs: addrs}, nil
}

// New connects to Redis (lazily: New does not fail when Redis is down) and
// starts the append batcher; Close stops it.
func New(cfg Config) (*Backend, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := Options(cfg.URL)
	if err != nil {
		return nil, err
	}
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.MaxRetries = 1
	client := redis.NewUniversalClient(opts)
	// Appends are never retried by the client: a pipeline whose replies
	// were lost may have run, and running it again would store its
	// messages twice. A failed append is answered unavailable instead.
	appendOpts := *opts
	appendOpts.MaxRetries = -1
	appendClient := redis.NewUniversalClient(&appendOpts)
	installWait(appendClient, cfg)
	subOpts := *opts
	subOpts.PoolSize = cfg.Partitions + 4
	// Blocking reads last up to the subscriber's block time; the read
	// timeout must not cut them.
	subOpts.ReadTimeout = cfg.Timeout + 2*time.Second
	subClient := redis.NewUniversalClient(&subOpts)
	for _, c := range []redis.UniversalClient{client, appendClient, subClient} {
		followTopology(c)
	}

	wlog := quietCancel{watermill.NewSlogLoggerWithLevelMapping(cfg.Logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
	keys := Keys{Prefix: cfg.Prefix, Partitions: cfg.Partitions}
	dead, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:     client,
		Marshaller: redisstream.DefaultMarshallerUnmarshaller{},
		Maxlens:    map[string]int64{keys.Rejected(): cfg.DeadLetterMaxLen},
	}, wlog)
	if err != nil {
		_ = client.Close()       // nothing was used yet
		_ = appendClient.Close() // nothing was used yet
		_ = subClient.Close()    // nothing was used yet
		return nil, fmt.Errorf("redisstore: dead-letter publisher: %w", err)
	}
	b := &Backend{
		cfg: cfg, keys: keys, log: cfg.Logger, wlog: wlog,
		client: client, appendClient: appendClient, subClient: subClient, dead: dead,
		lanes: make([]chan appendReq, cfg.InFlight),
		stop:  make(chan struct{}),
	}
	for i := range b.lanes {
		lane := make(chan appendReq, 4*cfg.MaxBatch)
		b.lanes[i] = lane
		b.wg.Go(func() { b.batcher(lane) })
	}
	return b, nil
}

// Keys returns the deployment's key names.
func (b *Backend) Keys() Keys { return b.keys }

// Client returns the backend's Redis client (for tools).
func (b *Backend) Client() redis.UniversalClient { return b.client }

// Partitions returns the number of bus streams.
func (b *Backend) Partitions() int { return b.cfg.Partitions }

// Ping reports whether Redis answers (PING): enough for the read-only
// tools. An instance's readiness needs Writable.
func (b *Backend) Ping(ctx context.Context) error {
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstore: %w: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// Writable reports whether Redis takes writes: it writes a short-lived
// probe key, so a Redis that answers but refuses writes (out of memory
// under maxmemory, a read-only replica) fails it.
func (b *Backend) Writable(ctx context.Context) error {
	if err := b.client.Set(ctx, b.keys.Prefix+":health", "ok", 10*time.Second).Err(); err != nil {
		return fmt.Errorf("redisstore: %w: %w", pipeline.ErrUnavailable, err)
	}
	return nil
}

// Close stops the batcher and closes the Redis clients; later Appends fail
// with ErrClosed.
func (b *Backend) Close() error {
	first := false
	b.stopOnce.Do(func() {
		first = true
		b.closeMu.Lock()
		b.closed = true
		b.closeMu.Unlock()
		close(b.stop)
	})
	if !first {
		return nil
	}
	b.wg.Wait()
	return errors.Join(b.client.Close(), b.appendClient.Close(), b.subClient.Close())
}

// DeadLetter publishes msg to the dead-letter stream through Watermill's
// Redis Streams publisher.
func (b *Backend) DeadLetter(_ context.Context, msg *message.Message) error {
	if err := b.dead.Publish(b.keys.Rejected(), msg); err != nil {
		return fmt.Errorf("redisstore: dead letter: %w", err)
	}
	return nil
}

// appendReq is one append waiting for the batcher; done receives its
// result, once.
type appendReq struct {
	part int
	room string
	// sent is the send's record key; empty when the message has no ref.
	sent    string
	uuid    string
	payload []byte
	// md is the message's metadata as a msgpack map whose header counts two
	// entries more than follow: the script appends seq and epoch.
	md   []byte
	done func(appendRes)
}

type appendRes struct {
	a   pipeline.Appended
	err error
}

// ErrClosed reports use of a closed backend.
var ErrClosed = errors.New("redisstore: closed")

// Append stores msg in its room stream and bus atomically, after checking
// the send's record (see Keys.Sent): a send already stored in the room's
// epoch stores nothing and returns the original. Calls that arrive while a
// round trip is in flight are stored together in the next one, by the
// batcher goroutine of the room's partition.
func (b *Backend) Append(ctx context.Context, msg *message.Message) (pipeline.Appended, error) {
	req, err := b.appendReq(msg)
	if err != nil {
		return pipeline.Appended{}, err
	}
	res := make(chan appendRes, 1)
	req.done = func(r appendRes) { res <- r }
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return pipeline.Appended{}, ErrClosed
	}
	// Close waits for this send; the batcher drains the queue meanwhile.
	select {
	case b.laneOf(req.part) <- req:
	case <-ctx.Done():
		b.closeMu.RUnlock()
		return pipeline.Appended{}, fmt.Errorf("redisstore: append: %w", ctx.Err())
	}
	b.closeMu.RUnlock()
	select {
	case r := <-res:
		return r.a, r.err
	case <-ctx.Done():
		// The batcher answers into the buffered channel later; the
		// message may still be stored, but it was not acknowledged.
		return pipeline.Appended{}, fmt.Errorf("redisstore: append: %w", ctx.Err())
	}
}

// AppendAsync queues msg for the batcher like Append and returns at once;
// done is called from a batcher goroutine (it must not block). Messages of
// one room are stored in the order they were queued. A full queue
// (4 × MaxBatch per batcher, see Config.InFlight) refuses with pipeline.ErrOverloaded: at most that
// many appends wait, so an overloaded instance answers at once instead of
// queueing without bound.
func (b *Backend) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	req, err := b.appendReq(msg)
	if err != nil {
		return err
	}
	req.done = func(r appendRes) { done(r.a, r.err) }
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case b.laneOf(req.part) <- req:
		return nil
	default:
		return fmt.Errorf("redisstore: append: %w", pipeline.ErrOverloaded)
	}
}

// laneOf returns the queue of the batcher that stores partition p.
func (b *Backend) laneOf(p int) chan appendReq { return b.lanes[p%len(b.lanes)] }

// appendReq prepares the append of msg: its keys and its encoded metadata.
func (b *Backend) appendReq(msg *message.Message) (appendReq, error) {
	room := msg.Metadata.Get(pipeline.MetaRoom)
	if room == "" {
		return appendReq{}, fmt.Errorf("redisstore: append: %w", pipeline.ErrIncomplete)
	}
	p := pipeline.PartitionOf(room, b.cfg.Partitions)
	req := appendReq{part: p, room: room, uuid: msg.UUID, payload: msg.Payload, md: appendMetadata(nil, msg.Metadata)}
	if ref := msg.Metadata.Get(pipeline.MetaRef); ref != "" {
		req.sent = b.keys.sentIn(p, room, msg.Metadata.Get(pipeline.MetaUser), ref)
	}
	return req, nil
}

// appendMetadata appends md to buf as a msgpack map of strings, leaving out
// seq and epoch but counting them in the map's header: the append script
// adds them once it knows them.
func appendMetadata(buf []byte, md message.Metadata) []byte {
	n, size := 2, 5
	for k, v := range md {
		if k != pipeline.MetaSeq && k != pipeline.MetaEpoch {
			n++
			size += len(k) + len(v) + 10
		}
	}
	if buf == nil {
		buf = make([]byte, 0, size)
	}
	switch {
	case n < 16:
		buf = append(buf, 0x80|byte(n))
	case n < 1<<16:
		buf = append(buf, 0xde, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	for k, v := range md {
		if k != pipeline.MetaSeq && k != pipeline.MetaEpoch {
			buf = appendMsgpackString(appendMsgpackString(buf, k), v)
		}
	}
	return buf
}

// appendMsgpackString appends s to buf as a msgpack string.
func appendMsgpackString(buf []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		buf = append(buf, 0xa0|byte(n))
	case n < 1<<8:
		buf = append(buf, 0xd9, byte(n))
	case n < 1<<16:
		buf = append(buf, 0xda, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(buf, s...)
}

// batcher stores the appends queued in lane in batches of at most MaxBatch:
// whatever has queued while the previous round trip was in flight goes in
// the next. It returns when the backend closes, failing what is queued.
func (b *Backend) batcher(lane chan appendReq) {
	batch := make([]appendReq, 0, b.cfg.MaxBatch)
	for {
		select {
		case <-b.stop:
			failQueued(lane)
			return
		case r := <-lane:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case r := <-lane:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.runBatch(batch)
		clear(batch) // the next batch must not keep this one's payloads alive
	}
}

func failQueued(lane chan appendReq) {
	for {
		select {
		case r := <-lane:
			r.done(appendRes{err: ErrClosed})
		default:
			return
		}
	}
}

// scriptCall is one append script call: the messages of one partition in a
// batch, in batch order.
type scriptCall struct {
	keys []string
	args []any
	// reqs are the batch's indexes of the call's messages, in order.
	reqs []int
}

// calls groups batch by partition into script calls; messages of one room
// keep their order.
func (b *Backend) calls(batch []appendReq) []scriptCall {
	var calls []scriptCall
	var callOf [MaxPartitions]int // partition → index in calls + 1
	for i, r := range batch {
		c := callOf[r.part]
		if c == 0 {
			calls = append(calls, scriptCall{})
			c = len(calls)
			callOf[r.part] = c
		}
		calls[c-1].reqs = append(calls[c-1].reqs, i)
	}
	ttl := b.cfg.RoomTTL.Milliseconds()
	if b.cfg.RoomTTL < 0 {
		ttl = 0
	}
	for ci := range calls {
		c := &calls[ci]
		p := batch[c.reqs[0]].part
		// Room r's number is its index in rooms + 1.
		var rooms []string
		roomNo := make(map[string]int, len(c.reqs))
		nsent := 0
		for _, i := range c.reqs {
			r := batch[i]
			if roomNo[r.room] == 0 {
				rooms = append(rooms, r.room)
				roomNo[r.room] = len(rooms)
			}
			if r.sent != "" {
				nsent++
			}
		}
		c.keys = make([]string, 0, 2+2*len(rooms)+nsent)
		c.keys = append(c.keys, b.keys.Bus(p), b.keys.BusEpoch(p))
		c.args = make([]any, 0, 6+len(rooms)+5*len(c.reqs))
		c.args = append(c.args, b.cfg.RoomMaxLen, b.cfg.BusMaxLen, ttl, b.cfg.IdempotencyWindow.Milliseconds(),
			pipeline.NewEpoch(), len(rooms))
		for _, room := range rooms {
			c.keys = append(c.keys, b.keys.roomIn(p, room), b.keys.epochIn(p, room))
			c.args = append(c.args, pipeline.NewEpoch())
		}
		nsent = 0
		for _, i := range c.reqs {
			r := batch[i]
			k := 0
			if r.sent != "" {
				c.keys = append(c.keys, r.sent)
				nsent++
				k = nsent
			}
			c.args = append(c.args, roomNo[r.room], k, r.uuid, r.payload, r.md)
		}
	}
	return calls
}

func (b *Backend) runBatch(batch []appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	calls := b.calls(batch)
	cmds, err := b.evalBatch(ctx, calls, true)
	if err != nil {
		// Only the calls that failed for want of the cached script run
		// again, with the script's text: the others may have been stored
		// (in a Cluster, by another node).
		var again []scriptCall
		var at []int
		for i, c := range cmds {
			if isNoScript(c.Err()) {
				again = append(again, calls[i])
				at = append(at, i)
			}
		}
		if len(again) > 0 {
			if rcmds, rerr := b.evalBatch(ctx, again, false); len(rcmds) == len(again) {
				for j, i := range at {
					cmds[i] = rcmds[j]
				}
				if rerr == nil && len(again) == len(calls) {
					err = nil
				}
			}
		}
	}
	for ci, c := range calls {
		if ci >= len(cmds) {
			for _, i := range c.reqs {
				batch[i].done(appendRes{err: fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, err)})
			}
			continue
		}
		replies, cerr := cmds[ci].Slice()
		if cerr == nil && len(replies) != len(c.reqs) {
			cerr = fmt.Errorf("%w: %d replies to %d appends", errBadReply, len(replies), len(c.reqs))
		}
		for j, i := range c.reqs {
			var a pipeline.Appended
			if cerr == nil {
				a, err = appended(replies[j])
			}
			if cerr != nil || err != nil {
				batch[i].done(appendRes{err: fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, cmp.Or(cerr, err))})
				continue
			}
			batch[i].done(appendRes{a: a})
		}
	}
}

// appended reads one message's reply of the append script: {seq, epoch,
// uuid, duplicate}, or {"!", error}.
func appended(reply any) (pipeline.Appended, error) {
	v, _ := reply.([]any)
	switch len(v) {
	case 4:
		seq, ok1 := v[0].(string)
		epoch, ok2 := v[1].(string)
		id, ok3 := v[2].(string)
		dup, ok4 := v[3].(int64)
		if ok1 && ok2 && ok3 && ok4 {
			return pipeline.Appended{ID: id, Seq: seq, Epoch: epoch, Duplicate: dup == 1}, nil
		}
	case 2:
		if mark, _ := v[0].(string); mark == "!" {
			return pipeline.Appended{}, fmt.Errorf("%w: %v", errScript, v[1])
		}
	}
	return pipeline.Appended{}, fmt.Errorf("%w: append script replied %v", errBadReply, reply)
}

var (
	// errBadReply reports a reply of the append script that is not its own
	// (e.g. another version of the script under the same SHA).
	errBadReply = errors.New("unexpected reply")
	// errScript reports a message the append script could not store (e.g.
	// its room's key holds something else than a stream).
	errScript = errors.New("append script")
)

// evalBatch runs the append script calls in one pipeline, by SHA when bySHA
// is set (the script is cached after the first Eval). Commands that must
// follow each batch's appends are added to the pipeline after them.
func (b *Backend) evalBatch(ctx context.Context, calls []scriptCall, bySHA bool) ([]*redis.Cmd, error) {
	pipe := b.appendClient.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		if bySHA {
			cmds[i] = appendScript.EvalSha(ctx, pipe, c.keys, c.args...)
		} else {
			cmds[i] = appendScript.Eval(ctx, pipe, c.keys, c.args...)
		}
	}
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// isNoScript reports Redis's reply to EVALSHA of a script it does not hold.
func isNoScript(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOSCRIPT")
}
