package memstore

import "fmt"

// EntrySize and DeadLetterSize are the sizes the byte budgets count.
var (
	EntrySize      = entrySize
	DeadLetterSize = deadLetterSize
)

// Bytes returns the byte totals of the rooms' messages and of the dead
// letters, or an error when a counter differs from the sum of the sizes
// of what is kept, or a room keeps no message, more than RoomMaxLen, or
// an array more than four times what it keeps (see roomLog.drop).
func (b *Backend) Bytes() (rooms, dead int64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum int64
	for _, name := range b.rooms.Keys() {
		r, _ := b.rooms.Peek(name)
		if n := len(r.msgs); n == 0 || n > b.cfg.RoomMaxLen {
			return 0, 0, fmt.Errorf("room %s keeps %d messages, want 1 to RoomMaxLen %d", name, n, b.cfg.RoomMaxLen)
		}
		if size := r.dead + cap(r.msgs); size > 4*len(r.msgs)+3 {
			return 0, 0, fmt.Errorf("room %s keeps %d messages in an array of %d", name, len(r.msgs), size)
		}
		var held int64
		for _, m := range r.msgs {
			if size := r.size(m); size != entrySize(r.message(m)) {
				return 0, 0, fmt.Errorf("room %s counts %d bytes for a message of %d", name, size, entrySize(r.message(m)))
			}
			held += r.size(m)
		}
		if held != r.bytes {
			return 0, 0, fmt.Errorf("room %s counts %d bytes, holds %d", name, r.bytes, held)
		}
		sum += held
	}
	if sum != b.bytes {
		return 0, 0, fmt.Errorf("rooms count %d bytes, hold %d", b.bytes, sum)
	}
	var deadSum int64
	for _, m := range b.dead {
		deadSum += deadLetterSize(m)
	}
	if deadSum != b.deadBytes {
		return 0, 0, fmt.Errorf("dead letters count %d bytes, hold %d", b.deadBytes, deadSum)
	}
	return b.bytes, b.deadBytes, nil
}

// RoomArray returns the number of messages room keeps and the length of
// the array that holds them.
func (b *Backend) RoomArray(room string) (n, size int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.rooms.Peek(room)
	if !ok {
		return 0, 0
	}
	return len(r.msgs), r.dead + cap(r.msgs)
}

// FeedLog trims the feed's replay log as an Append does, then returns its
// published entries and their bytes and its unpublished entries, or an
// error when its byte total differs from the sum of its entries' sizes.
func (b *Backend) FeedLog() (published int, publishedBytes int64, unpublished int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimRecent()
	var sum int64
	for _, m := range b.recent {
		sum += deadLetterSize(m)
	}
	if sum != b.recentBytes {
		return 0, 0, 0, fmt.Errorf("the feed log counts %d bytes, holds %d", b.recentBytes, sum)
	}
	unpublished = int(b.unpublished.Load())
	var unpublishedBytes int64
	for _, m := range b.recent[len(b.recent)-unpublished:] {
		unpublishedBytes += deadLetterSize(m)
	}
	return len(b.recent) - unpublished, sum - unpublishedBytes, unpublished, nil
}
