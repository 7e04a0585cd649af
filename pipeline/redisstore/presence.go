package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// PresenceTTL is how long an instance's presence entries outlive its last
// refresh; entries of a crashed instance disappear after it.
const PresenceTTL = 15 * time.Second

// Presence returns the key of room's presence set: a sorted set whose
// members are "<instance>|<user>" scored with their expiry (Unix ms).
func (k Keys) Presence(room string) string {
	return fmt.Sprintf("%s:{p%02d}:presence:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// PresenceVersion returns the key of room's presence version counter,
// incremented whenever an instance changes the set, so readers re-read the
// set only when it changed.
func (k Keys) PresenceVersion(room string) string {
	return fmt.Sprintf("%s:{p%02d}:presence-ver:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// PresenceStore shares one instance's room members through Redis. It
// implements ws.PresenceStore; Sync must not be called concurrently.
type PresenceStore struct {
	b        *Backend
	instance string
	// written is what this instance has in each room's set; versions and
	// cache are the last version read and the users read for it.
	written     map[string]map[string]bool
	versions    map[string]string
	cache       map[string][]string
	lastRefresh time.Time
}

// NewPresenceStore returns the presence store of the instance named id.
func (b *Backend) NewPresenceStore(id string) *PresenceStore {
	return &PresenceStore{
		b: b, instance: id,
		written:  make(map[string]map[string]bool),
		versions: make(map[string]string),
		cache:    make(map[string][]string),
	}
}

// Sync writes this instance's changes (and, every PresenceTTL/3, refreshes
// its entries and drops expired ones), then reads the users of every local
// room whose version changed.
func (p *PresenceStore) Sync(ctx context.Context, local map[string][]string) (map[string][]string, error) {
	now := time.Now()
	exp := float64(now.Add(PresenceTTL).UnixMilli())
	refresh := now.Sub(p.lastRefresh) >= PresenceTTL/3
	keys := p.b.keys
	pipe := p.b.client.Pipeline()
	bump := func(room string) {
		pipe.Incr(ctx, keys.PresenceVersion(room))
		pipe.Expire(ctx, keys.PresenceVersion(room), 24*time.Hour)
	}
	for room, users := range p.written {
		if _, ok := local[room]; !ok {
			for u := range users {
				pipe.ZRem(ctx, keys.Presence(room), p.member(u))
			}
			bump(room)
		}
	}
	expired := map[string]*redis.IntCmd{}
	for room, users := range local {
		w := p.written[room]
		changed := false
		for _, u := range users {
			if !w[u] || refresh {
				pipe.ZAdd(ctx, keys.Presence(room), redis.Z{Score: exp, Member: p.member(u)})
				changed = changed || !w[u]
			}
		}
		for u := range w {
			if !slices.Contains(users, u) {
				pipe.ZRem(ctx, keys.Presence(room), p.member(u))
				changed = true
			}
		}
		if changed {
			bump(room)
		}
		if refresh {
			expired[room] = pipe.ZRemRangeByScore(ctx, keys.Presence(room), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		}
	}
	vers := make(map[string]*redis.StringCmd, len(local))
	for room := range local {
		vers[room] = pipe.Get(ctx, keys.PresenceVersion(room))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, p.b.unavailable(err)
	}
	// What was written is now in Redis.
	p.written = make(map[string]map[string]bool, len(local))
	for room, users := range local {
		set := make(map[string]bool, len(users))
		for _, u := range users {
			set[u] = true
		}
		p.written[room] = set
	}
	if refresh {
		p.lastRefresh = now
		// Entries of a stopped or crashed instance expired: tell every
		// instance to read the room again.
		bumps := p.b.client.Pipeline()
		for room, cmd := range expired {
			if cmd.Val() > 0 {
				bumps.Incr(ctx, keys.PresenceVersion(room))
				bumps.Expire(ctx, keys.PresenceVersion(room), 24*time.Hour)
				delete(p.cache, room) // and read it here too
			}
		}
		if bumps.Len() > 0 {
			if _, err := bumps.Exec(ctx); err != nil {
				return nil, p.b.unavailable(err)
			}
		}
	}

	read := p.b.client.Pipeline()
	ranges := map[string]*redis.StringSliceCmd{}
	for room := range local {
		v := vers[room].Val()
		if c, ok := p.cache[room]; ok && c != nil && v == p.versions[room] {
			continue
		}
		p.versions[room] = v
		ranges[room] = read.ZRangeByScore(ctx, keys.Presence(room), &redis.ZRangeBy{Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"})
	}
	if len(ranges) > 0 {
		if _, err := read.Exec(ctx); err != nil && err != redis.Nil {
			return nil, p.b.unavailable(err)
		}
	}
	out := make(map[string][]string, len(local))
	for room := range local {
		if r, ok := ranges[room]; ok {
			p.cache[room] = distinctUsers(r.Val())
		}
		out[room] = p.cache[room]
	}
	for room := range p.cache {
		if _, ok := local[room]; !ok {
			delete(p.cache, room)
			delete(p.versions, room)
		}
	}
	return out, nil
}

func (p *PresenceStore) member(user string) string { return p.instance + "|" + user }

// distinctUsers strips the instance from presence members and dedupes.
func distinctUsers(members []string) []string {
	users := make([]string, 0, len(members))
	for _, m := range members {
		if _, u, ok := strings.Cut(m, "|"); ok {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return slices.Compact(users)
}
