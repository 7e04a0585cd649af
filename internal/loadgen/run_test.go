package loadgen

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// TestTextAndRef: what appendSend writes, the readers parse back.
func TestTextAndRef(t *testing.T) {
	r := &run{cfg: Config{TextSize: 100}, id: "lgabc"}
	buf := r.appendSend(nil, 42, 7, 3, 12345, phaseMeasured, 987654321*time.Nanosecond)
	want := `{"type":"send","room":"lgabc-7","text":"m 987654321 42 12345 `
	if len(buf) < len(want) || string(buf[:len(want)]) != want {
		t.Fatalf("frame %s, want it to start %s", buf, want)
	}
	text, ok := stringField(buf, textKey)
	if !ok || len(text) != 100 {
		t.Fatalf("text %q (%d bytes), want 100 bytes", text, len(text))
	}
	phase, at, sender, n, ok := parseText(text)
	if !ok || phase != phaseMeasured || at != 987654321 || sender != 42 || n != 12345 {
		t.Errorf("parseText = %c %v %d %d %v", phase, at, sender, n, ok)
	}
	ref, ok := stringField(buf, refKey)
	if !ok {
		t.Fatalf("no ref in %s", buf)
	}
	phase, slot, n, at, ok := parseRef(ref)
	if !ok || phase != phaseMeasured || slot != 3 || n != 12345 || at != 987654321 {
		t.Errorf("parseRef(%s) = %c %d %d %v %v", ref, phase, slot, n, at, ok)
	}
	for _, bad := range []string{"", "m", "m 1 2", "m x 2 3 ", "hello world"} {
		if _, _, _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("parseText(%q) ok, want not", bad)
		}
	}
}

// TestCollectCountsLoss: loss is the acked messages a receiver of the room
// did not get, per receiver and per message; rooms are matched to their
// senders as connect joins them.
func TestCollectCountsLoss(t *testing.T) {
	acked := func(ns ...int) bitset {
		var b bitset
		for _, n := range ns {
			b.add(n)
		}
		return b
	}
	// got gives receiver's bitsets by sender (two senders).
	got := func(bySender map[int][]int) []bitset {
		out := make([]bitset, 2)
		for s, ns := range bySender {
			out[s] = acked(ns...)
		}
		return out
	}
	// 3 rooms, 2 senders: sender 0 in rooms 0 and 2 (slots 0, 1), sender 1
	// in room 1; receivers 0 and 3 in room 0, 1 in room 1, 2 in room 2.
	r := &run{cfg: Config{Rooms: 3, Conns: 4, Senders: 2, Duration: time.Second}, group: 2}
	r.senders = []*sender{
		{index: 0, rooms: []int{0, 2}, acked: []bitset{acked(0, 1, 2, 100), acked(0, 1)}, acks: 6},
		{index: 1, rooms: []int{1}, acked: []bitset{acked(0, 1, 2)}, acks: 3},
	}
	r.receivers = []*receiver{
		{room: 0, got: got(map[int][]int{0: {0, 1, 2, 100}})},
		{room: 1, got: got(map[int][]int{1: {0, 2}})}, // misses 1
		{room: 2}, // none yet: misses 0 and 1
		{room: 0, got: got(map[int][]int{0: {0, 1, 2, 3, 4}})}, // misses 100; 3 and 4 were not acked
	}
	var res Result
	r.collect(&res, time.Now())
	if res.LostDeliveries != 4 || res.LostMessages != 4 {
		t.Errorf("lost %d deliveries, %d messages; want 4 and 4", res.LostDeliveries, res.LostMessages)
	}
	r.receivers[3].got[0].add(100)
	r.receivers[2].got = got(map[int][]int{0: {0, 1}})
	res = Result{}
	r.collect(&res, time.Now())
	if res.LostDeliveries != 1 || res.LostMessages != 1 || res.Acked != 9 {
		t.Errorf("lost %d deliveries, %d messages, acked %d; want 1, 1, 9", res.LostDeliveries, res.LostMessages, res.Acked)
	}
}

// TestReadMessage: a message arriving in pieces is read whole into the
// reused buffer, which grows past its first size and keeps its capacity.
func TestReadMessage(t *testing.T) {
	msg := strings.Repeat("m 1 2 3 xxxx\n", 1000) // 13,000 bytes, above messageBufferSize
	buf := make([]byte, 0, messageBufferSize)
	buf, err := readMessage(iotest.HalfReader(strings.NewReader(msg)), buf)
	if err != nil || string(buf) != msg {
		t.Fatalf("read %d bytes, %v; want the %d of the message", len(buf), err, len(msg))
	}
	grown := cap(buf)
	buf, err = readMessage(iotest.OneByteReader(strings.NewReader("short")), buf[:0])
	if err != nil || string(buf) != "short" || cap(buf) != grown {
		t.Errorf("read %q (capacity %d), %v; want short in the same buffer (capacity %d)", buf, cap(buf), err, grown)
	}
	_, err = readMessage(iotest.TimeoutReader(strings.NewReader(msg)), buf[:0])
	if !errors.Is(err, iotest.ErrTimeout) {
		t.Errorf("error %v, want the reader's %v", err, iotest.ErrTimeout)
	}
}
