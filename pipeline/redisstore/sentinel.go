package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// SentinelScheme starts a --redis URL that names Redis Sentinels:
// redis-sentinel://[user:pass@]host:port[,host:port...]/master[/db]. The
// client asks the sentinels for the current primary of master and follows
// its failovers; user and password are the primary's.
const SentinelScheme = "redis-sentinel://"

// sentinelOptions parses a SentinelScheme URL.
func sentinelOptions(raw string) (*redis.UniversalOptions, error) {
	bad := func(why string) error {
		return fmt.Errorf("redisstore: %q: %s (want %shost:port[,host:port...]/master[/db])", redactURL(raw), why, SentinelScheme)
	}
	rest := strings.TrimPrefix(raw, SentinelScheme)
	var user, pass string
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		u, p, hasPass := strings.Cut(rest[:at], ":")
		var err error
		if user, err = url.PathUnescape(u); err != nil {
			return nil, bad("bad user")
		}
		if hasPass {
			if pass, err = url.PathUnescape(p); err != nil {
				return nil, bad("bad password")
			}
		}
		rest = rest[at+1:]
	}
	hosts, path, _ := strings.Cut(rest, "/")
	master, dbs, hasDB := strings.Cut(path, "/")
	if master == "" {
		return nil, bad("no master name")
	}
	db := 0
	if hasDB {
		n, err := strconv.Atoi(dbs)
		if err != nil || n < 0 {
			return nil, bad("bad database number")
		}
		db = n
	}
	var addrs []string
	for a := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(strings.TrimSpace(a))
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return nil, bad(fmt.Sprintf("%q is not host:port", a))
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return &redis.UniversalOptions{Addrs: addrs, MasterName: master, DB: db, Username: user, Password: pass}, nil
}

// redactURL hides the password of a URL in error messages.
func redactURL(raw string) string {
	rest := strings.TrimPrefix(raw, SentinelScheme)
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	u, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return SentinelScheme + u + ":xxx@" + rest[at+1:]
}

// primaryWatch is a hook of a Sentinel client that counts the changes of
// the server its connections are dialed to. After a failover go-redis
// dials the new primary for commands, but leaves open subscriptions on the
// old one, which goes on answering them until Sentinel reconfigures it
// (seconds later, or never while it is cut off). A pushed subscription
// that sees the count change subscribes again, on the new primary
// (BusSubscriberConfig.PrimaryChanges).
type primaryWatch struct {
	log     *slog.Logger
	changes atomic.Uint64

	mu   sync.Mutex
	addr string // the address last dialed
}

var _ redis.Hook = (*primaryWatch)(nil)

// DialHook notes the address each new connection was dialed to.
func (w *primaryWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil {
			w.dialed(conn.RemoteAddr().String())
		}
		return conn, err
	}
}

// dialed counts a change when addr is not the address dialed before. It
// compares resolved addresses, so it assumes that the primary's announced
// address resolves to one IP (Sentinel announces IPs unless told to
// announce hostnames): connections of one primary dialed to two IPs would
// count as changes, each of which moves the subscriptions once more.
func (w *primaryWatch) dialed(addr string) {
	w.mu.Lock()
	from := w.addr
	w.addr = addr
	changed := from != "" && addr != from
	if changed {
		w.changes.Add(1)
	}
	w.mu.Unlock()
	if changed {
		w.log.Warn("the Redis primary changed; pushed subscriptions move to it", "from", from, "to", addr)
	}
}

// Changes returns how many times the primary changed.
func (w *primaryWatch) Changes() uint64 { return w.changes.Load() }

// ProcessHook passes commands through.
func (*primaryWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook passes pipelines through.
func (*primaryWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
