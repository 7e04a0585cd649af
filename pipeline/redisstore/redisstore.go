// Package redisstore is chatstream's Redis Streams backend: a history stream
// per room, N partition bus streams that every instance follows with its
// own Watermill subscriber (BusSubscriber: pushes of each entry on the bus's
// shard channel, or fan-out reads of many entries per round trip), and a
// dead-letter stream written by watermill-redisstream's
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

// appendSHA is the SHA1 of the append script, for EVALSHA.
var appendSHA = redis.NewScript(appendLua).Hash()

// Config configures a Backend. A zero field takes the default in its comment.
type Config struct {
	// URL selects the Redis: redis://[user:pass@]host:port/db (rediss://
	// for TLS), unix:///path/to/redis.sock?db=N for one on this host's Unix
	// socket, a comma separated list of one or more host:port addresses of
	// Redis Cluster
	// nodes (seeds: the client learns the others from them), or
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
	// PollBus turns pushes off: the append script does not publish the
	// messages it stores, and each partition subscription blocks reading
	// its bus (XREAD BLOCK). By default the script publishes each message
	// on its bus's shard channel (SPUBLISH, see append.lua) and Subscribe
	// listens there (SSUBSCRIBE): Redis then does no work per message and
	// subscriber beyond the publish, and a message reaches a subscriber
	// without a read's round trip. A pushed subscription still reads the
	// bus to catch up, whenever a push shows that entries were missed, and
	// after a second without a push (see BusSubscriberConfig.Pushed), so
	// instances with and without PollBus can share a Redis: a message that
	// one with PollBus stores reaches one without it by such a read, up to
	// a second late. Default false: pushed.
	PollBus bool
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
	return string(appendSentKey(nil, k.tag(p), room, user, ref))
}

// appendSentKey appends to dst the send record key of (user, ref) in room,
// whose partition's keys start with tag.
func appendSentKey(dst []byte, tag, room, user, ref string) []byte {
	// One buffer holds both length-prefixed strings: a single hash write.
	var small [128]byte
	buf := small[:0]
	buf = binary.AppendUvarint(buf, uint64(len(user)))
	buf = append(buf, user...)
	buf = binary.AppendUvarint(buf, uint64(len(ref)))
	buf = append(buf, ref...)
	sum := sha256.Sum256(buf)
	dst = append(dst, tag...)
	dst = append(dst, "sent:"...)
	dst = append(dst, room...)
	dst = append(dst, ':')
	return hex.AppendEncode(dst, sum[:16])
}

// Bus returns the bus stream of partition p.
func (k Keys) Bus(p int) string { return k.tag(p) + "bus" }

// BusChannel returns the shard channel on which the append script pushes
// the entries of partition p's bus, in database db (see
// Config.PollBus): the bus's key, so in its slot, and the database, since
// pub/sub channels are shared by the databases of a Redis.
func (k Keys) BusChannel(p, db int) string { return k.Bus(p) + channelSuffix(db) }

// channelSuffix ends the name of a bus's channel in database db.
func channelSuffix(db int) string { return ":db" + strconv.Itoa(db) }

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
	// subscriptions, each of which pins one connection while it blocks
	// (PollBus), so its pool is larger than the number of partitions; a
	// pushed subscription only borrows one to read, and its channel's
	// connection is go-redis's own, outside the pool.
	client       redis.UniversalClient
	appendClient redis.UniversalClient
	subClient    redis.UniversalClient
	dead         *redisstream.Publisher
	// primary counts the primary changes of a Sentinel client (nil
	// otherwise), which end pushed subscriptions left on the old one.
	primary *primaryWatch
	// heard[p] is the newest entry of partition p's bus that this
	// instance's pushed subscription heard of.
	heard [MaxPartitions]heardID

	// lanes queue appends for the batcher goroutines, one lane each
	// (partition p's in lanes[p % InFlight]); a batcher sends whatever has
	// queued while its previous round trip was in flight as one pipelined
	// batch. Append blocks when its lane is full, AppendAsync refuses.
	lanes []chan appendReq
	// tags[p] starts partition p's keys (Keys.tag); busArgs[p] holds its
	// bus and bus epoch keys; fixedArgs the script's first four
	// arguments. All are made once, boxed for the argument lists.
	tags      []string
	busArgs   [][2]any
	fixedArgs [4]any
	// pushArg is the script's push argument: "" with PollBus, else
	// channelSuffix, which ends the name of a bus's channel (Keys.
	// BusChannel).
	pushArg, channelSuffix string
	// cluster is set for a Redis Cluster: a batch is stored by one script
	// call per partition instead of one in all.
	cluster  bool
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

// Options parses a Redis URL (see Config.URL) into client options. A
// host:port list is always a Cluster (IsClusterMode), even of one address:
// go-redis' NewUniversalClient would make a single address a plain client,
// which does not follow the Cluster and fails batches spanning partitions.
func Options(url string) (*redis.UniversalOptions, error) {
	if strings.HasPrefix(url, SentinelScheme) {
		return sentinelOptions(url)
	}
	if strings.Contains(url, "://") {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
		// A unix:// URL's address is the socket's absolute path, which
		// go-redis dials as a Unix socket (UniversalOptions has no
		// network of its own; TestUnixSocket).
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
	return &redis.UniversalOptions{Addrs: addrs, IsClusterMode: true}, nil
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
	// MaxRetries covers a single Redis; in a Cluster go-redis retries
	// pipelines up to MaxRedirects times, which evalBatch stops by
	// queueing each script call as a noRetryCmd.
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
	var primary *primaryWatch
	if opts.MasterName != "" {
		primary = &primaryWatch{log: cfg.Logger}
		subClient.AddHook(primary)
	}

	wlog := quietCancel{pipeline.WatermillLogger(cfg.Logger)}
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
		primary: primary,
		lanes:   make([]chan appendReq, cfg.InFlight),
		stop:    make(chan struct{}),
	}
	ttl := cfg.RoomTTL.Milliseconds()
	if cfg.RoomTTL < 0 {
		ttl = 0 // never expire
	}
	_, b.cluster = appendClient.(*redis.ClusterClient)
	b.fixedArgs = [4]any{cfg.RoomMaxLen, cfg.BusMaxLen, ttl, cfg.IdempotencyWindow.Milliseconds()}
	b.channelSuffix = channelSuffix(opts.DB)
	if !cfg.PollBus {
		b.pushArg = b.channelSuffix
	}
	for p := range cfg.Partitions {
		b.tags = append(b.tags, keys.tag(p))
		b.busArgs = append(b.busArgs, [2]any{keys.Bus(p), keys.BusEpoch(p)})
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
		return b.healthErr(err)
	}
	return nil
}

// healthErr is the error of a failed health check. A Cluster client
// pointed at a single Redis (a host:port list names Cluster nodes) says
// how to name one instead.
func (b *Backend) healthErr(err error) error {
	if b.cluster && strings.Contains(err.Error(), "cluster support disabled") {
		return fmt.Errorf("redisstore: %w: %w (a host:port list names Redis Cluster nodes; for a single Redis use redis://host:port/0)",
			pipeline.ErrUnavailable, err)
	}
	return fmt.Errorf("redisstore: %w: %w", pipeline.ErrUnavailable, err)
}

// Writable reports whether Redis takes writes: it writes a short-lived
// probe key, so a Redis that answers but refuses writes (out of memory
// under maxmemory, a read-only replica) fails it.
func (b *Backend) Writable(ctx context.Context) error {
	if err := b.client.Set(ctx, b.keys.Prefix+":health", "ok", 10*time.Second).Err(); err != nil {
		return b.healthErr(err)
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

// isNoScript reports Redis's reply to EVALSHA of a script it does not hold.
func isNoScript(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOSCRIPT")
}
