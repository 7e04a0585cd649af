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
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
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
	"github.com/vmihailenco/msgpack"

	"github.com/chatstream/chatstream/pipeline"
)

//go:embed append.lua
var appendLua string

var appendScript = redis.NewScript(appendLua)

// Config configures a Backend. A zero field takes the default in its comment.
type Config struct {
	// URL selects the Redis: redis://[user:pass@]host:port/db, or a comma
	// separated list of host:port addresses for a Redis Cluster. Required.
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
	// message; a room idle for longer is forgotten and its next message
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
	case c.IdempotencyWindow < time.Millisecond:
		return errors.New("redisstore: idempotency window must be at least 1ms")
	case c.RoomTTL >= 0 && c.RoomTTL < time.Millisecond:
		return errors.New("redisstore: room TTL must be at least 1ms (or negative: never)")
	case c.WaitReplicas < 0:
		return errors.New("redisstore: wait replicas must not be negative")
	case c.WaitTimeout < time.Millisecond || c.WaitTimeout >= c.Timeout:
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

// Room returns the history stream of room.
func (k Keys) Room(room string) string {
	return fmt.Sprintf("%s:{p%02d}:room:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// Epoch returns the string key holding room's epoch. It expires with the
// room's stream.
func (k Keys) Epoch(room string) string {
	return fmt.Sprintf("%s:{p%02d}:epoch:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// Sent returns the string key recording the send (user, room, ref) for the
// idempotency window: a msgpack array of the room's epoch, the message's
// UUID and its seq. User and ref are hashed (SHA-256 of both, each length
// prefixed, first 128 bits in hex), so no user name appears in a key and no
// two sends share one.
func (k Keys) Sent(room, user, ref string) string {
	h := sha256.New()
	for _, s := range []string{user, ref} {
		_, _ = h.Write(binary.AppendUvarint(nil, uint64(len(s)))) // hash writes never fail
		_, _ = h.Write([]byte(s))
	}
	return fmt.Sprintf("%s:{p%02d}:sent:%s:%x", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room, h.Sum(nil)[:16])
}

// Bus returns the bus stream of partition p.
func (k Keys) Bus(p int) string { return fmt.Sprintf("%s:{p%02d}:bus", k.Prefix, p) }

// BusEpoch returns the string key holding partition p's bus epoch.
func (k Keys) BusEpoch(p int) string { return k.Bus(p) + ":epoch" }

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

	// reqs queues appends for the batcher goroutine, which sends whatever
	// has queued while its previous round trip was in flight as one
	// pipelined batch. Append blocks when it is full.
	reqs     chan appendReq
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
		reqs: make(chan appendReq, 4*cfg.MaxBatch),
		stop: make(chan struct{}),
	}
	b.wg.Go(b.batcher)
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
	keys []string
	args []any
	done func(appendRes)
}

type appendRes struct {
	a   pipeline.Appended
	err error
}

// ErrClosed reports use of a closed backend.
var ErrClosed = errors.New("redisstore: closed")

// Append stores msg in its room stream and bus with one script call, which
// first checks the send's record (see Keys.Sent) and, for a send already
// stored in the room's epoch, stores nothing and returns the original.
// Calls that arrive while a round trip is in flight are pipelined together
// in the next one, by the batcher goroutine.
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
	case b.reqs <- req:
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
// done is called from the batcher goroutine (it must not block). Queued
// messages are stored in queue order. A full queue (4 × MaxBatch) refuses
// with pipeline.ErrOverloaded: at most that many appends wait, so an
// overloaded instance answers at once instead of queueing without bound.
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
	case b.reqs <- req:
		return nil
	default:
		return fmt.Errorf("redisstore: append: %w", pipeline.ErrOverloaded)
	}
}

// appendReq builds the script call that appends msg.
func (b *Backend) appendReq(msg *message.Message) (appendReq, error) {
	room := msg.Metadata.Get(pipeline.MetaRoom)
	if room == "" {
		return appendReq{}, fmt.Errorf("redisstore: append: %w", pipeline.ErrIncomplete)
	}
	md, err := msgpack.Marshal(map[string]string(msg.Metadata))
	if err != nil {
		return appendReq{}, fmt.Errorf("redisstore: metadata: %w", err)
	}
	p := pipeline.PartitionOf(room, b.cfg.Partitions)
	keys := []string{b.keys.Room(room), b.keys.Bus(p), b.keys.Epoch(room), b.keys.BusEpoch(p)}
	if ref := msg.Metadata.Get(pipeline.MetaRef); ref != "" {
		keys = append(keys, b.keys.Sent(room, msg.Metadata.Get(pipeline.MetaUser), ref))
	}
	ttl := b.cfg.RoomTTL.Milliseconds()
	if b.cfg.RoomTTL < 0 {
		ttl = 0
	}
	return appendReq{
		keys: keys,
		args: []any{
			b.cfg.RoomMaxLen, b.cfg.BusMaxLen, msg.UUID, []byte(msg.Payload), md,
			pipeline.NewEpoch(), ttl, b.cfg.IdempotencyWindow.Milliseconds(),
		},
	}, nil
}

// batcher sends appends in pipelined batches of at most MaxBatch: whatever
// has queued while the previous round trip was in flight goes in the next.
func (b *Backend) batcher() {
	batch := make([]appendReq, 0, b.cfg.MaxBatch)
	for {
		select {
		case <-b.stop:
			b.failQueued()
			return
		case r := <-b.reqs:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.runBatch(batch)
	}
}

func (b *Backend) failQueued() {
	for {
		select {
		case r := <-b.reqs:
			r.done(appendRes{err: ErrClosed})
		default:
			return
		}
	}
}

func (b *Backend) runBatch(batch []appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	cmds, err := b.evalBatch(ctx, batch, true)
	if err != nil {
		// Only the calls that failed for want of the cached script run
		// again, with the script's text: the others may have been stored
		// (in a Cluster, by another node).
		var again []int
		for i, c := range cmds {
			if isNoScript(c.Err()) {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			retry := make([]appendReq, len(again))
			for j, i := range again {
				retry[j] = batch[i]
			}
			if rcmds, _ := b.evalBatch(ctx, retry, false); len(rcmds) == len(again) {
				for j, i := range again {
					cmds[i] = rcmds[j]
				}
			}
		}
	}
	for i, r := range batch {
		if i >= len(cmds) {
			r.done(appendRes{err: fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, err)})
			continue
		}
		a, cerr := appended(cmds[i])
		if cerr != nil {
			r.done(appendRes{err: fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, cerr)})
			continue
		}
		r.done(appendRes{a: a})
	}
}

// appended reads the append script's reply: {seq, epoch, uuid, duplicate}.
func appended(c *redis.Cmd) (pipeline.Appended, error) {
	v, err := c.Slice()
	if err != nil {
		return pipeline.Appended{}, err
	}
	if len(v) == 4 {
		seq, ok1 := v[0].(string)
		epoch, ok2 := v[1].(string)
		id, ok3 := v[2].(string)
		dup, ok4 := v[3].(int64)
		if ok1 && ok2 && ok3 && ok4 {
			return pipeline.Appended{ID: id, Seq: seq, Epoch: epoch, Duplicate: dup == 1}, nil
		}
	}
	return pipeline.Appended{}, fmt.Errorf("%w: append script replied %v", errBadReply, v)
}

// errBadReply reports a reply of the append script that is not its own
// (e.g. another version of the script under the same SHA).
var errBadReply = errors.New("unexpected reply")

// evalBatch runs the append script for every request in one pipeline, by
// SHA when bySHA is set (the script is cached after the first Eval).
func (b *Backend) evalBatch(ctx context.Context, batch []appendReq, bySHA bool) ([]*redis.Cmd, error) {
	pipe := b.appendClient.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, r := range batch {
		if bySHA {
			cmds[i] = appendScript.EvalSha(ctx, pipe, r.keys, r.args...)
		} else {
			cmds[i] = appendScript.Eval(ctx, pipe, r.keys, r.args...)
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
