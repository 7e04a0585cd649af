package redisstore_test

import (
	"testing"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestContract runs the backend contract suite against Redis Streams.
func TestContract(t *testing.T) {
	srv := testredis.Start(t)
	n := 0
	storetest.Run(t, func(t *testing.T, roomMaxLen int) pipeline.Backend {
		n++
		b, err := redisstore.New(redisstore.Config{
			URL: srv.URL, Prefix: srv.Prefix + "x" + string(rune('a'+n)), RoomMaxLen: int64(roomMaxLen), Partitions: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
