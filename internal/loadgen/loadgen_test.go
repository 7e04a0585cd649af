package loadgen_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/loadgen"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// TestRunCountsEveryDelivery: a small bounded run against a real gateway
// delivers every acked message to every member and measures latency.
func TestRunCountsEveryDelivery(t *testing.T) {
	srv := testserver.Start(t, server.Config{WS: ws.Config{FrameRate: 1000, FrameBurst: 1000}})

	res, err := loadgen.Run(context.Background(), loadgen.Config{
		URLs: []string{srv.URL()}, Conns: 20, Rooms: 2, Senders: 4, Rate: 200,
		Duration: time.Second, MaxMessages: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.Acked != 100 || res.Errors != 0 {
		t.Fatalf("sent/acked/errors = %d/%d/%d, want 100/100/0", res.Sent, res.Acked, res.Errors)
	}
	// 24 connections over 2 rooms: 12 members each; every message reaches 12.
	if res.Expected != 100*12 || res.Deliveries != res.Expected {
		t.Fatalf("deliveries = %d, expected = %d, want both %d", res.Deliveries, res.Expected, 100*12)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
		t.Fatalf("latencies out of order: %s", res)
	}
}
