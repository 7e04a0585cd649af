package memstore_test

import (
	"testing"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/storetest"
)

// TestContract runs the backend contract suite against the memory backend.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, roomMaxLen int) pipeline.Backend {
		return memstore.New(memstore.Config{RoomMaxLen: roomMaxLen})
	})
}
