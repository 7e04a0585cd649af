package loadgen

import "math/bits"

// bitset is a set of message numbers that grows as numbers are added. A
// run's bitsets together hold one bit per expected delivery, so their size
// is bounded by MaxMessagesLimit × receivers / 8 bytes. Not safe for
// concurrent use: each has one owning goroutine.
type bitset []uint64

// add adds n and reports whether it was already present.
func (b *bitset) add(n int) (had bool) {
	w := n / 64
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b))...)
	}
	bit := uint64(1) << (n % 64)
	had = (*b)[w]&bit != 0
	(*b)[w] |= bit
	return had
}

// count returns the number of elements.
func (b bitset) count() int64 {
	var n int64
	for _, w := range b {
		n += int64(bits.OnesCount64(w))
	}
	return n
}

// missing returns the elements of b that are not in other (other may be nil).
func (b bitset) missing(other bitset) bitset {
	out := make(bitset, len(b))
	for i, w := range b {
		if i < len(other) {
			w &^= other[i]
		}
		out[i] = w
	}
	return out
}

// union adds every element of other to b.
func (b *bitset) union(other bitset) {
	if len(other) > len(*b) {
		*b = append(*b, make([]uint64, len(other)-len(*b))...)
	}
	for i, w := range other {
		(*b)[i] |= w
	}
}
