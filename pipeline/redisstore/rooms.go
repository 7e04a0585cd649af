package redisstore

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// RoomOfKey returns the room of a room stream key, or "" when key is not
// one of this deployment's room streams.
func (k Keys) RoomOfKey(key string) string {
	rest, ok := strings.CutPrefix(key, k.Prefix+":{p")
	if !ok {
		return ""
	}
	_, room, ok := strings.Cut(rest, "}:room:")
	if !ok {
		return ""
	}
	if k.Room(room) != key { // a key of another partition count or a stray
		return ""
	}
	return room
}

// Rooms returns the names of every room that has a history stream, sorted.
// It SCANs the keyspace (on every master of a Cluster).
func (b *Backend) Rooms(ctx context.Context) ([]string, error) {
	pattern := b.keys.Prefix + ":{p*}:room:*"
	// mu guards seen: a Cluster's masters are scanned concurrently.
	var mu sync.Mutex
	seen := map[string]bool{}
	scan := func(ctx context.Context, c scanner) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if room := b.keys.RoomOfKey(iter.Val()); room != "" {
				mu.Lock()
				seen[room] = true
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	if err := forEachMaster(ctx, b.client, scan); err != nil {
		return nil, b.unavailable(err)
	}
	rooms := make([]string, 0, len(seen))
	for r := range seen {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	return rooms, nil
}
