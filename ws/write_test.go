package ws

import (
	"strings"
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

	type read struct {
		data string
		err  error
	}
	got := make(chan read, 256)
	go func() {
		for {
			_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := cl.ReadMessage()
			got <- read{string(data), err}
			if err != nil {
				return
			}
		}
	}()
	// next reads the next message, which must be want, skipping the
	// frames the server sent on connecting.
	next := func(want string) {
		t.Helper()
		for {
			r := <-got
			if r.err != nil {
				t.Fatalf("read: %v", r.err)
			}
			if r.data == want {
				return
			}
			if !strings.HasPrefix(r.data, `{"type":`) || strings.HasPrefix(r.data, `{"type":"x"`) {
				t.Fatalf("read %q, want %q", r.data, want)
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
