package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/ratelimit"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type send struct {
	user, conn string
	at         time.Duration // after t0
	wantWait   time.Duration // 0: accepted
}

func run(t *testing.T, l *ratelimit.Limiter, sends []send) {
	t.Helper()
	for i, s := range sends {
		d, err := l.Moderate(context.Background(), &moderation.Message{User: s.user, ConnID: s.conn, Room: "r", Text: "x", Time: t0.Add(s.at)})
		if err != nil {
			t.Fatal(err)
		}
		if s.wantWait == 0 {
			if d.Action != moderation.Accept {
				t.Fatalf("send %d (%s/%s at %s): got %v %q, want accept", i, s.user, s.conn, s.at, d.Action, d.Reason)
			}
			continue
		}
		if d.Action != moderation.Reject || d.RetryAfter != s.wantWait {
			t.Fatalf("send %d (%s/%s at %s): got %v retry %s, want reject retry %s", i, s.user, s.conn, s.at, d.Action, d.RetryAfter, s.wantWait)
		}
		if !strings.Contains(d.Reason, "too fast") {
			t.Errorf("reason = %q", d.Reason)
		}
	}
}

func TestMemory(t *testing.T) {
	tests := []struct {
		name  string
		cfg   ratelimit.Config
		sends []send
	}{
		{
			name: "per user burst then rate",
			cfg:  ratelimit.Config{PerUser: &ratelimit.Limit{Rate: 2, Per: time.Second, Burst: 2}},
			sends: []send{
				{"alice", "c1", 0, 0}, {"alice", "c2", 0, 0}, {"alice", "c3", 0, 500 * time.Millisecond},
				{"bob", "c4", 0, 0}, // another user has their own bucket
				{"alice", "c1", 500 * time.Millisecond, 0},
			},
		},
		{
			name: "per conn",
			cfg:  ratelimit.Config{PerConn: &ratelimit.Limit{Rate: 1, Per: 10 * time.Second}},
			sends: []send{
				{"alice", "c1", 0, 0}, {"alice", "c1", time.Second, 9 * time.Second}, {"alice", "c2", time.Second, 0},
			},
		},
		{
			name: "a refused user gives the connection's token back",
			cfg: ratelimit.Config{
				PerUser: &ratelimit.Limit{Rate: 1, Per: time.Minute},
				PerConn: &ratelimit.Limit{Rate: 2, Per: time.Minute},
			},
			sends: []send{
				{"alice", "c1", 0, 0},
				{"alice", "c1", 0, time.Minute}, // refused by the user limit
				{"bob", "c1", 0, 0},             // the connection still has its second token
				{"carol", "c1", 0, 30 * time.Second},
			},
		},
		{
			name: "least recently used key is forgotten",
			cfg:  ratelimit.Config{PerUser: &ratelimit.Limit{Rate: 1, Per: time.Hour}, MaxKeys: 2},
			sends: []send{
				{"a", "", 0, 0}, {"a", "", 0, time.Hour},
				{"b", "", 0, 0}, {"c", "", 0, 0}, // evicts a
				{"a", "", 0, 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, l, tt.sends)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ratelimit.Config
	}{
		{"nothing", ratelimit.Config{}},
		{"zero rate", ratelimit.Config{PerUser: &ratelimit.Limit{}}},
		{"bad backend", ratelimit.Config{PerUser: &ratelimit.Limit{Rate: 1}, Backend: "disk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

// TestRedisSharedAcrossInstances: two limiters on one Redis (two instances)
// share each user's budget, under the deployment's prefix.
func TestRedisSharedAcrossInstances(t *testing.T) {
	rs := testredis.Start(t)
	rc := rs.Client()
	cfg := ratelimit.Config{PerUser: &ratelimit.Limit{Rate: 2, Per: time.Minute, Burst: 2}, Redis: rc, Prefix: rs.Prefix}
	a, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	msg := &moderation.Message{User: "alice", ConnID: "c", Text: "x", Time: time.Now()}
	for i, l := range []*ratelimit.Limiter{a, b} {
		if d, err := l.Moderate(ctx, msg); err != nil || d.Action != moderation.Accept {
			t.Fatalf("send %d: %v %v, want accept", i, d.Action, err)
		}
	}
	d, err := a.Moderate(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != moderation.Reject || d.RetryAfter <= 0 || d.RetryAfter > 30*time.Second {
		t.Fatalf("third send: %v retry %s, want reject within 30s", d.Action, d.RetryAfter)
	}
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := rs.Prefix + ":ratelimit:user:alice"
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("redis keys = %v, want only %s", keys, want)
	}
	if !strings.Contains(a.Describe(), "in Redis") {
		t.Errorf("describe = %q", a.Describe())
	}
}

// TestRedisDown: a limiter whose Redis cannot be reached returns an error
// (the chain applies on_error).
func TestRedisDown(t *testing.T) {
	rs := testredis.Start(t)
	if !rs.Private() {
		t.Skip("needs a private redis-server to stop")
	}
	opt, err := redis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries, opt.DialTimeout = -1, 200*time.Millisecond
	rc := redis.NewClient(opt)
	t.Cleanup(func() { _ = rc.Close() })
	l, err := ratelimit.New(ratelimit.Config{PerUser: &ratelimit.Limit{Rate: 2}, Redis: rc, Prefix: rs.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Moderate(ctx, &moderation.Message{User: "alice", Time: time.Now()}); err == nil {
		t.Fatal("no error with Redis down")
	}
}
