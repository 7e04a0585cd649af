package ws

import (
	"bytes"
	"testing"
	"time"
)

// TestWriteBatch: a batch is one text message of its frames separated by
// newlines, and a batch of one frame, the usual case, costs at most one
// allocation (gorilla boxes the write buffer it returns to the pool);
// written through NextWriter it costs two, the writer being the other.
func TestWriteBatch(t *testing.T) {
	_, cl, c := startOne(t)
	// Hold the connection's writer slot, so that nothing else writes
	// while the test does.
	c.mu.Lock()
	if !c.startWriterLocked() {
		c.mu.Unlock()
		t.Fatal("a writer was already running")
	}
	c.mu.Unlock()

	// next reads the next message, which must be want, skipping the
	// frames the server sent on connecting. It reads in the test's
	// goroutine, never while AllocsPerRun counts (it counts the whole
	// process's allocations): the messages wait in the socket's buffers.
	next := func(want string) {
		t.Helper()
		for {
			_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := cl.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if string(data) == want {
				return
			}
			if !bytes.HasPrefix(data, []byte(`{"type":`)) || bytes.HasPrefix(data, []byte(`{"type":"x"`)) {
				t.Fatalf("read %q, want %q", data, want)
			}
		}
	}

	one := []byte(`{"type":"x","n":1}`)
	if err := c.writeBatch([][]byte{one}); err != nil {
		t.Fatal(err)
	}
	next(`{"type":"x","n":1}`)
	if err := c.writeBatch([][]byte{one, []byte(`{"type":"x","n":2}`)}); err != nil {
		t.Fatal(err)
	}
	next("{\"type\":\"x\",\"n\":1}\n{\"type\":\"x\",\"n\":2}")

	const runs = 100
	allocs := testing.AllocsPerRun(runs, func() {
		if err := c.writeBatch([][]byte{one}); err != nil {
			t.Fatal(err)
		}
	})
	for range runs + 1 { // AllocsPerRun runs it once more to warm up
		next(`{"type":"x","n":1}`)
	}
	if allocs > 1 {
		t.Errorf("a batch of one frame costs %.1f allocations, want at most 1", allocs)
	}
}
