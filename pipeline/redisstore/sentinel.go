package redisstore

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

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
