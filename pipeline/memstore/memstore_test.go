package memstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// TestContract runs the backend contract suite against the memory backend.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, roomMaxLen int) pipeline.Backend {
		b, err := memstore.New(memstore.Config{RoomMaxLen: roomMaxLen, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestConfig proves that New takes the defaults for zero limits and refuses
// negative ones, as does Validate.
func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  memstore.Config
		ok   bool
	}{
		{"zero takes defaults", memstore.Config{}, true},
		{"explicit", memstore.Config{RoomMaxLen: 10, FeedQueue: 4, DeadLetterMaxLen: 3, Logger: quiet}, true},
		{"negative room max len", memstore.Config{RoomMaxLen: -1}, false},
		{"negative feed queue", memstore.Config{FeedQueue: -1}, false},
		{"negative dead letter max len", memstore.Config{DeadLetterMaxLen: -1}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := memstore.New(tc.cfg)
			if b != nil {
				t.Cleanup(func() { _ = b.Close() }) // the test is over
			}
			if (err == nil) != tc.ok || (b == nil) != !tc.ok {
				t.Fatalf("New(%+v) = %v, %v; want ok %v", tc.cfg, b, err, tc.ok)
			}
			if !tc.ok {
				if !strings.HasPrefix(err.Error(), "memstore: ") {
					t.Errorf("error %q does not name the package", err)
				}
				if verr := tc.cfg.Validate(); verr == nil {
					t.Errorf("Validate() = nil, want the error of New, %v", err)
				}
			}
		})
	}
}

// newBackend returns a default backend, closed by t.Cleanup.
func newBackend(t *testing.T, cfg memstore.Config) *memstore.Backend {
	t.Helper()
	cfg.Logger = quiet
	b, err := memstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() }) // the test is over
	return b
}

// TestInstances proves that RecordInstance keeps a copy of each instance's
// latest record and Instances returns them by id.
func TestInstances(t *testing.T) {
	b := newBackend(t, memstore.Config{})
	ctx := context.Background()
	if got, err := b.Instances(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Instances() = %+v, %v; want none", got, err)
	}
	started := time.Now().UTC()
	positions := []string{"1-0"}
	for _, info := range []pipeline.InstanceInfo{
		{ID: "b", Addr: "10.0.0.2:80", StartedAt: started, Positions: positions},
		{ID: "a", Addr: "10.0.0.1:80", StartedAt: started},
		{ID: "b", Addr: "10.0.0.2:80", StartedAt: started, Positions: []string{"2-0"}},
	} {
		if err := b.RecordInstance(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	positions[0] = "changed by the caller"
	got, err := b.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("Instances() = %+v, want a and b, by id", got)
	}
	if !slices.Equal(got[1].Positions, []string{"2-0"}) || got[1].Addr != "10.0.0.2:80" || !got[1].StartedAt.Equal(started) {
		t.Fatalf("record of b = %+v, want its latest", got[1])
	}
}

// TestOldest proves that Oldest is "" for an empty feed and then the seq of
// the oldest message the feed keeps, which moves on as the feed trims.
func TestOldest(t *testing.T) {
	const maxLen = 2
	b := newBackend(t, memstore.Config{RoomMaxLen: maxLen})
	ctx := context.Background()
	if got, err := b.Oldest(ctx, 0); err != nil || got != "" {
		t.Fatalf("Oldest() of an empty feed = %q, %v; want \"\"", got, err)
	}
	var seqs []string
	for i := range 2 * maxLen {
		msg := message.NewMessage(fmt.Sprint("msg-", i), []byte("hi"))
		msg.Metadata.Set(pipeline.MetaRoom, "lobby")
		msg.Metadata.Set(pipeline.MetaUser, "alice")
		seq, err := b.Append(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		if got, err := b.Oldest(ctx, 0); err != nil || pipeline.CompareSeq(got, seqs[0]) < 0 || pipeline.CompareSeq(got, seq) > 0 {
			t.Fatalf("Oldest() after %d appends = %q, %v; want a kept seq in [%s, %s]", i+1, got, err, seqs[0], seq)
		}
	}
	if got, _ := b.Oldest(ctx, 0); pipeline.CompareSeq(got, seqs[0]) <= 0 {
		t.Fatalf("Oldest() = %q after %d appends to a feed keeping %d, want it past the first, %s", got, 2*maxLen, maxLen, seqs[0])
	}
}
