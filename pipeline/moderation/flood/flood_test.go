package flood_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/flood"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type send struct {
	user, room, text string
	at               time.Duration
	reject           bool
}

func TestFlood(t *testing.T) {
	tests := []struct {
		name  string
		cfg   flood.Config
		sends []send
	}{
		{
			name: "fourth identical message is rejected",
			cfg:  flood.Config{MaxRepeats: 3, Window: 30 * time.Second},
			sends: []send{
				{"alice", "lobby", "buy now", 0, false},
				{"alice", "lobby", "buy now", time.Second, false},
				{"alice", "lobby", "buy now", 2 * time.Second, false},
				{"alice", "lobby", "buy now", 3 * time.Second, true},
				{"alice", "lobby", "something else", 4 * time.Second, false},
			},
		},
		{
			name: "normalised text counts as the same",
			cfg:  flood.Config{MaxRepeats: 2, Window: time.Minute},
			sends: []send{
				{"alice", "lobby", "Buy NOW!!!", 0, false},
				{"alice", "lobby", "buy   now", 0, false},
				{"alice", "lobby", "ｂｕｙ ｎｏｗ", 0, true},
				{"alice", "lobby", "BUY N0W.", 0, true},
			},
		},
		{
			name: "per user and per room",
			cfg:  flood.Config{MaxRepeats: 1, Window: time.Minute},
			sends: []send{
				{"alice", "lobby", "hi", 0, false},
				{"bob", "lobby", "hi", 0, false},
				{"alice", "other", "hi", 0, false},
				{"alice", "lobby", "hi", 0, true},
			},
		},
		{
			name: "repeats leave the window",
			cfg:  flood.Config{MaxRepeats: 1, Window: 10 * time.Second},
			sends: []send{
				{"alice", "lobby", "hi", 0, false},
				{"alice", "lobby", "hi", 5 * time.Second, true},
				{"alice", "lobby", "hi", 11 * time.Second, false},
			},
		},
		{
			name: "least recently active pair is forgotten",
			cfg:  flood.Config{MaxRepeats: 1, Window: time.Minute, MaxKeys: 1},
			sends: []send{
				{"alice", "lobby", "hi", 0, false},
				{"bob", "lobby", "hi", 0, false},
				{"alice", "lobby", "hi", 0, false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := flood.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.sends {
				d, err := f.Moderate(context.Background(), &moderation.Message{User: s.user, Room: s.room, Text: s.text, Time: t0.Add(s.at)})
				if err != nil {
					t.Fatal(err)
				}
				if got := d.Action == moderation.Reject; got != s.reject {
					t.Fatalf("send %d %q by %s in %s: got %v, want reject=%v", i, s.text, s.user, s.room, d.Action, s.reject)
				}
			}
		})
	}
}
