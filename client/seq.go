package client

import (
	"strconv"
	"strings"
)

// compareSeq orders two seqs of the form "<ms>-<n>" numerically (never as
// strings, docs/PROTOCOL.md §5); ok is false when either has another form,
// and then only equality means anything.
func compareSeq(a, b string) (cmp int, ok bool) {
	am, an, aok := parseSeq(a)
	bm, bn, bok := parseSeq(b)
	if !aok || !bok {
		return 0, false
	}
	switch {
	case am != bm:
		return cmpUint(am, bm), true
	default:
		return cmpUint(an, bn), true
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func parseSeq(s string) (ms, n uint64, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	n, err2 := strconv.ParseUint(b, 10, 64)
	return ms, n, err1 == nil && err2 == nil
}

// notAfter reports whether seq is since or, when both can be ordered, before
// it.
func notAfter(seq, since string) bool {
	if seq == since {
		return true
	}
	cmp, ok := compareSeq(seq, since)
	return ok && cmp <= 0
}

// seqSet remembers the most recent seqs added, at most its capacity; the
// oldest is forgotten first. It is owned by its room (guarded by Client.mu).
type seqSet struct {
	has  map[string]struct{}
	ring []string
	next int
}

func newSeqSet(capacity int) seqSet {
	return seqSet{has: make(map[string]struct{}, capacity), ring: make([]string, 0, capacity)}
}

func (s *seqSet) contains(seq string) bool {
	_, ok := s.has[seq]
	return ok
}

func (s *seqSet) add(seq string) {
	if s.contains(seq) {
		return
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, seq)
	} else {
		delete(s.has, s.ring[s.next])
		s.ring[s.next] = seq
		s.next = (s.next + 1) % len(s.ring)
	}
	s.has[seq] = struct{}{}
}

func (s *seqSet) clear() {
	clear(s.has)
	s.ring = s.ring[:0]
	s.next = 0
}
