package client

import (
	"fmt"
	"testing"
	"time"
)

func TestCompareSeq(t *testing.T) {
	tests := []struct {
		a, b   string
		cmp    int
		wantOK bool
	}{
		{"9-0", "10-0", -1, true}, // numbers, not strings
		{"10-2", "10-10", -1, true},
		{"10-1", "10-1", 0, true},
		{"11-0", "10-99", 1, true},
		{"x", "1-0", 0, false},
		{"1-0-0", "1-0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			cmp, ok := compareSeq(tt.a, tt.b)
			if cmp != tt.cmp || ok != tt.wantOK {
				t.Fatalf("got %d, %v, want %d, %v", cmp, ok, tt.cmp, tt.wantOK)
			}
		})
	}
}

func TestSeqSetForgetsOldest(t *testing.T) {
	s := newSeqSet(3)
	for k := range 5 {
		s.add(fmt.Sprintf("%d-0", k))
	}
	for k, want := range []bool{false, false, true, true, true} {
		if got := s.contains(fmt.Sprintf("%d-0", k)); got != want {
			t.Fatalf("contains %d-0: got %v, want %v", k, got, want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	lo, hi := 10*time.Millisecond, time.Second
	for attempt := range 100 {
		limit := lo
		for range min(attempt, 20) {
			limit = min(2*limit, hi)
		}
		for range 50 {
			if d := backoff(lo, hi, attempt); d < 0 || d >= limit {
				t.Fatalf("attempt %d: got %v, want in [0, %v)", attempt, d, limit)
			}
		}
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct{ base, want string }{
		{"http://h:8080", "ws://h:8080/ws?user=bob+b"},
		{"https://h/", "wss://h/ws?user=bob+b"},
		{"ws://h:1/chat/ws?x=1", "ws://h:1/chat/ws?user=bob+b&x=1"},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			if got, err := endpoint(tt.base, "bob b"); err != nil || got != tt.want {
				t.Fatalf("got %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}
