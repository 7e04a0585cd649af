package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// The rhythm of Presence, relative to an instance's ttl.
const (
	// presenceRefreshes is how many times per ttl an instance gives its
	// entries a new expiry (pipeline.DefaultPresenceTTL's "every third").
	// Must be more than 1, so entries are refreshed before they expire.
	presenceRefreshes = 3
	// presenceKeyLife is how many ttls a room's presence set outlives its
	// last write or refresh. Must be more than 1, so the set outlives
	// every entry in it.
	presenceKeyLife = 3
	// presenceVersionTTL is how long a room's version counter outlives its
	// last bump or refresh; a reader that saw it expire reads the room
	// again.
	presenceVersionTTL = 24 * time.Hour
)

// Presence returns the key of room's presence set: a sorted set whose
// members are "<instance>|<user>" scored with their expiry (Unix ms). The
// set itself expires presenceKeyLife times the longest TTL of the instances
// that wrote or refreshed it last.
func (k Keys) Presence(room string) string {
	return fmt.Sprintf("%s:{p%02d}:presence:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// PresenceVersion returns the key of room's presence version counter,
// incremented whenever an instance changes the set, so readers re-read the
// set only when it changed.
func (k Keys) PresenceVersion(room string) string {
	return fmt.Sprintf("%s:{p%02d}:presence-ver:%s", k.Prefix, pipeline.PartitionOf(room, k.Partitions), room)
}

// extendScript gives KEYS[1] a TTL of ARGV[1] ms unless it has a longer one,
// so an instance with a short ttl never cuts short the set of one with a
// longer ttl. (PEXPIRE's GT option would need Redis 7, and leaves a key
// without a TTL untouched.)
var extendScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0`)

// refreshScript is the expire phase of one room, in one step so that no
// change of the set is left unannounced:
//
//	KEYS[1] presence set, KEYS[2] version
//	ARGV[1] now (Unix ms), ARGV[2] the refreshed entries' expiry (Unix ms)
//	ARGV[3] the set's life (ms), ARGV[4] the version's life (ms)
//	ARGV[5..] this instance's members, refreshed
//
// It gives the members their new expiry, removes the entries expired by
// now, bumps the version when that added a member (one lost to a Redis
// restart, or dropped by another instance while this one stalled) or
// removed one, and extends the life of both keys. It returns the number of
// members added and removed.
var refreshScript = redis.NewScript(`
local added = 0
for i = 5, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
end
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if added + removed > 0 then
  redis.call('INCR', KEYS[2])
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return added + removed`)

// Presence shares one instance's room members with the other instances
// through Redis (see Keys.Presence and Keys.PresenceVersion).
//
// Sync costs one round trip, two when a room's version changed: the first
// writes this instance's changes, refreshes its entries and drops expired
// ones (every ttl/presenceRefreshes), and reads the version of every local
// room; the second re-reads the rooms whose version differs from the one
// cached (and, at a refresh, every local room). Sync must not be called
// concurrently.
type Presence struct {
	b        *Backend
	instance string
	ttl      time.Duration

	// written is this instance's users of each room as stored in Redis by
	// the last successful Sync.
	written map[string]map[string]bool
	// versions and cache are, for each local room, the last version read
	// and the users read at it.
	versions map[string]string
	cache    map[string][]string
	// lastRefresh is when this instance's entries last got a new expiry.
	lastRefresh time.Time
}

var _ pipeline.Presence = (*Presence)(nil)

// NewPresence returns the presence of the instance named instanceID (which
// must not contain "|"), whose entries outlive its last refresh by ttl. A
// ttl of zero (or less) means pipeline.DefaultPresenceTTL.
func (b *Backend) NewPresence(instanceID string, ttl time.Duration) *Presence {
	if ttl <= 0 {
		ttl = pipeline.DefaultPresenceTTL
	}
	return &Presence{
		b: b, instance: instanceID, ttl: ttl,
		written:  make(map[string]map[string]bool),
		versions: make(map[string]string),
		cache:    make(map[string][]string),
	}
}

// Sync implements pipeline.Presence in three phases: write this instance's
// changes; expire, every ttl/presenceRefreshes (refresh this instance's
// entries and drop everyone's expired ones); and read the rooms whose
// version changed. The slices returned are the caller's.
func (p *Presence) Sync(ctx context.Context, local map[string][]string) (map[string][]string, error) {
	now := time.Now()
	want := userSets(local)
	refresh := now.Sub(p.lastRefresh) >= p.ttl/presenceRefreshes

	pipe := p.b.client.Pipeline()
	p.queueWrite(ctx, pipe, want, now)
	if refresh {
		p.queueExpire(ctx, pipe, want, now)
	}
	versions := make(map[string]*redis.StringCmd, len(want))
	for room := range want {
		versions[room] = pipe.Get(ctx, p.b.keys.PresenceVersion(room))
	}
	if err := execPipe(ctx, pipe); err != nil {
		// Nothing is recorded as done: the next Sync writes (and
		// refreshes) again, which is idempotent.
		return nil, p.b.unavailable(err)
	}
	p.written = want
	if refresh {
		p.lastRefresh = now
	}
	return p.read(ctx, want, versions, refresh, now)
}

// queueWrite queues this instance's changes since the last Sync: the
// entries of the users it gained (expiring ttl from now) and the removal of
// those it lost, in every room it had or has, and a version bump for every
// room it changed.
func (p *Presence) queueWrite(ctx context.Context, pipe redis.Pipeliner, want map[string]map[string]bool, now time.Time) {
	keys := p.b.keys
	changed := make(map[string]bool)
	for room, had := range p.written {
		var gone []any
		for u := range had {
			if !want[room][u] {
				gone = append(gone, p.member(u))
			}
		}
		if len(gone) > 0 {
			pipe.ZRem(ctx, keys.Presence(room), gone...)
			changed[room] = true
		}
	}
	for room, has := range want {
		var added []string
		for u := range has {
			if !p.written[room][u] {
				added = append(added, u)
			}
		}
		if len(added) > 0 {
			p.queueAdd(ctx, pipe, room, added, now)
			changed[room] = true
		}
	}
	for room := range changed {
		pipe.Incr(ctx, keys.PresenceVersion(room))
		pipe.Expire(ctx, keys.PresenceVersion(room), presenceVersionTTL)
	}
}

// queueExpire queues, for every room of want, refreshScript: a new
// expiry for this instance's entries, the removal of the entries that
// expired (a stopped instance's), a version bump if the set changed, and a
// longer life for the room's keys.
func (p *Presence) queueExpire(ctx context.Context, pipe redis.Pipeliner, want map[string]map[string]bool, now time.Time) {
	keys := p.b.keys
	for room, has := range want {
		args := make([]any, 0, 4+len(has))
		args = append(args, now.UnixMilli(), now.Add(p.ttl).UnixMilli(),
			(presenceKeyLife * p.ttl).Milliseconds(), presenceVersionTTL.Milliseconds())
		for u := range has {
			args = append(args, p.member(u))
		}
		refreshScript.Eval(ctx, pipe, []string{keys.Presence(room), keys.PresenceVersion(room)}, args...)
	}
}

// queueAdd queues the entries of users in room, expiring ttl from now, and
// extends the life of the room's set to cover them.
func (p *Presence) queueAdd(ctx context.Context, pipe redis.Pipeliner, room string, users []string, now time.Time) {
	expiry := float64(now.Add(p.ttl).UnixMilli())
	entries := make([]redis.Z, len(users))
	for i, u := range users {
		entries[i] = redis.Z{Score: expiry, Member: p.member(u)}
	}
	key := p.b.keys.Presence(room)
	pipe.ZAdd(ctx, key, entries...)
	extendScript.Eval(ctx, pipe, []string{key}, (presenceKeyLife * p.ttl).Milliseconds())
}

// read returns the users of every room of want, reading again only the
// rooms whose version (read by the first round trip) differs from the
// cached one, or every room when refreshing, and forgets the rooms no
// longer local. The reads at a refresh bound the life of a stale cache to
// a refresh interval should a version repeat one already seen (Redis lost
// the counter and counted up to it again).
func (p *Presence) read(ctx context.Context, want map[string]map[string]bool, versions map[string]*redis.StringCmd, refresh bool, now time.Time) (map[string][]string, error) {
	pipe := p.b.client.Pipeline()
	live := &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}
	ranges := make(map[string]*redis.StringSliceCmd)
	for room := range want {
		if _, ok := p.cache[room]; ok && !refresh && p.versions[room] == versions[room].Val() {
			continue
		}
		ranges[room] = pipe.ZRangeByScore(ctx, p.b.keys.Presence(room), live)
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, p.b.unavailable(err)
	}
	for room, r := range ranges {
		p.cache[room] = distinctUsers(r.Val())
		p.versions[room] = versions[room].Val()
	}
	for room := range p.cache {
		if _, ok := want[room]; !ok {
			delete(p.cache, room)
			delete(p.versions, room)
		}
	}
	out := make(map[string][]string, len(want))
	for room := range want {
		out[room] = slices.Clone(p.cache[room])
	}
	return out, nil
}

func (p *Presence) member(user string) string { return p.instance + "|" + user }

// execPipe sends pipe and returns the first error of its commands; a
// missing key (the version of a room never bumped) is not one.
func execPipe(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil && !errors.Is(cerr, redis.Nil) {
			return cerr
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// userSets returns the users of each room of local as a set.
func userSets(local map[string][]string) map[string]map[string]bool {
	sets := make(map[string]map[string]bool, len(local))
	for room, users := range local {
		set := make(map[string]bool, len(users))
		for _, u := range users {
			set[u] = true
		}
		sets[room] = set
	}
	return sets
}

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
