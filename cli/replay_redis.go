package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// redisFlags select the Redis deployment the tools work on.
type redisFlags struct {
	Redis       string `required:"" env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis: redis://host:port/db, or host:port,host:port,... for a Cluster."`
	RedisPrefix string `default:"${default_redis_prefix}" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of every Redis key."`
	Partitions  int    `default:"${default_partitions}" env:"CHATSTREAM_PARTITIONS" help:"Partition bus streams (as configured on the instances)."`
}

// trimFlags are the streams' trimming limits as configured on the
// instances, with serve's names, environment variables and defaults (a
// shell set up for an instance gives the tools the same values):
// `streams` shows them, and the tools that append trim with them. serve
// still declares its own (cli/serve.go); TestToolLimitFlagsMatchServe
// keeps the two equal until serve embeds these.
type trimFlags struct {
	RoomMaxlen int64 `default:"${default_room_maxlen}" env:"CHATSTREAM_ROOM_MAXLEN" help:"Messages kept per room (approximately, in Redis). The tools that append need the instances' value."`
	BusMaxlen  int64 `default:"${default_bus_maxlen}" env:"CHATSTREAM_BUS_MAXLEN" help:"Entries kept per partition bus stream (approximately). The tools that append need the instances' value."`
}

// Validate refuses negative limits (kong calls it after parsing; run
// calls it for commands built in code). 0 means the default, as on serve.
func (f trimFlags) Validate() error {
	for _, l := range []struct {
		flag string
		v    int64
	}{{"--room-maxlen (CHATSTREAM_ROOM_MAXLEN)", f.RoomMaxlen}, {"--bus-maxlen (CHATSTREAM_BUS_MAXLEN)", f.BusMaxlen}} {
		if l.v < 0 {
			return usageError(fmt.Errorf("%s is %d: want a number of entries, or 0 for the default", l.flag, l.v))
		}
	}
	return nil
}

// appendFlags are the limits an instance appends with, for the tools that
// append (replay --into, rejected --requeue): without them a tool would
// trim a room and its bus to the defaults and give the room the default
// TTL, whatever the deployment's serve flags. Same names, environment
// variables and defaults as serve's.
type appendFlags struct {
	Trim              trimFlags     `embed:""`
	RoomTTL           time.Duration `default:"${default_room_ttl}" env:"CHATSTREAM_ROOM_TTL" help:"How long a room's history outlives its last message; 0 keeps rooms forever. The tools that append need the instances' value."`
	IdempotencyWindow time.Duration `default:"${default_idempotency_window}" env:"CHATSTREAM_IDEMPOTENCY_WINDOW" help:"How long a send's ref is remembered: a resend with the same ref within it, or a dead letter requeued again, is acked with the message stored the first time. The tools that append need the instances' value."`
	MaxText           int           `default:"${default_max_text}" env:"CHATSTREAM_MAX_TEXT" help:"Largest message text, in bytes. The tools that append need the instances' value."`
}

// Validate refuses negative values (kong calls it after parsing; run calls
// it for commands built in code). 0 means what it means to serve: the
// default, except --room-ttl 0, which keeps rooms forever.
func (f appendFlags) Validate() error {
	if err := f.Trim.Validate(); err != nil {
		return err
	}
	switch {
	case f.RoomTTL < 0:
		return usageError(fmt.Errorf("--room-ttl (CHATSTREAM_ROOM_TTL) is %v: want a duration, or 0 to keep rooms forever", f.RoomTTL))
	case f.IdempotencyWindow < 0:
		return usageError(fmt.Errorf("--idempotency-window (CHATSTREAM_IDEMPOTENCY_WINDOW) is %v: want a duration, or 0 for the default", f.IdempotencyWindow))
	case f.MaxText < 0:
		return usageError(fmt.Errorf("--max-text (CHATSTREAM_MAX_TEXT) is %d: want a number of bytes, or 0 for the default", f.MaxText))
	}
	return nil
}

// config returns the backend configuration of these limits, as serve
// builds it.
func (f appendFlags) config(log *slog.Logger) redisstore.Config {
	return redisstore.Config{
		RoomMaxLen: f.Trim.RoomMaxlen, BusMaxLen: f.Trim.BusMaxlen,
		RoomTTL: roomTTL(f.RoomTTL), IdempotencyWindow: f.IdempotencyWindow, Logger: log,
	}
}

// open connects to the deployment's Redis, for reading, and checks that it
// answers.
func (f redisFlags) open(ctx context.Context, log *slog.Logger) (*redisstore.Backend, error) {
	return f.openConfig(ctx, redisstore.Config{Logger: log})
}

// openConfig is open with cfg's limits (its URL, prefix and partitions are
// the flags').
func (f redisFlags) openConfig(ctx context.Context, cfg redisstore.Config) (*redisstore.Backend, error) {
	cfg.URL, cfg.Prefix, cfg.Partitions = f.Redis, f.RedisPrefix, f.Partitions
	b, err := redisstore.New(cfg)
	if err != nil {
		return nil, usageError(redactError(err, f.Redis))
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Ping(pctx); err != nil {
		_ = b.Close() // nothing was used
		return nil, fmt.Errorf("redis %s unreachable: %w", redactURLs(f.Redis), err)
	}
	return b, nil
}

// redactError returns err with the passwords of url (as given to --redis,
// perhaps a comma-separated list) removed from its text, as written or as
// Go quotes them (an error about a URL that does not parse quotes it); it
// still wraps err.
func redactError(err error, url string) error {
	msg := err.Error()
	red := msg
	for _, secret := range urlSecrets(url) {
		quoted := strconv.Quote(secret)
		for _, form := range []string{secret, quoted[1 : len(quoted)-1]} {
			red = strings.ReplaceAll(red, form, redactedValue)
		}
	}
	if red == msg {
		return err
	}
	return &redactedError{msg: red, err: err}
}

// urlSecrets returns, for each comma-separated URL of s that has user
// information, its password (or the whole user information when it has no
// colon), as written.
func urlSecrets(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		info := p[:at]
		if i := strings.Index(info, "://"); i >= 0 {
			info = info[i+len("://"):]
		}
		if _, pw, ok := strings.Cut(info, ":"); ok {
			info = pw
		}
		if info != "" {
			out = append(out, info)
		}
	}
	return out
}

// redactedError is an error whose text has a password removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
