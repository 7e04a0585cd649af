package loadgen

import "testing"

// TestBitset: add reports repeats, missing and union are set difference
// and union whatever the lengths.
func TestBitset(t *testing.T) {
	var a, b bitset
	for _, n := range []int{0, 63, 64, 1000} {
		if a.add(n) {
			t.Errorf("add(%d) to a set without it reported it present", n)
		}
	}
	if !a.add(64) || a.count() != 4 {
		t.Errorf("add(64) again: not reported, or count %d != 4", a.count())
	}
	b.add(63)
	b.add(5000)
	if m := a.missing(b); m.count() != 3 {
		t.Errorf("a missing b has %d elements, want 3", m.count())
	}
	if m := a.missing(nil); m.count() != 4 {
		t.Errorf("a missing nothing has %d elements, want 4", m.count())
	}
	b.union(a)
	if b.count() != 5 {
		t.Errorf("union has %d elements, want 5", b.count())
	}
}
