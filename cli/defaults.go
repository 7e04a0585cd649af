package cli

import (
	"strconv"
	"time"

	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/admission"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/memstore"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/server"
	"github.com/chatstream/chatstream/ws"
)

// defaults are the flags' defaults, interpolated into their tags as
// ${name}: each is the constant of the package whose default it is, so a
// default is written once.
func defaults() kong.Vars {
	d := func(v time.Duration) string { return v.String() }
	i := func(v int) string { return strconv.Itoa(v) }
	return kong.Vars{
		"default_addr":                server.DefaultAddr,
		"default_internal_addr":       server.DefaultInternalAddr,
		"default_shutdown_timeout":    d(server.DefaultShutdownTimeout),
		"default_redis_prefix":        redisstore.DefaultPrefix,
		"default_partitions":          i(redisstore.DefaultPartitions),
		"default_bus_maxlen":          i(redisstore.DefaultBusMaxLen),
		"default_room_maxlen":         i(pipeline.DefaultRoomMaxLen),
		"default_room_ttl":            d(pipeline.DefaultRoomTTL),
		"default_idempotency_window":  d(pipeline.DefaultIdempotencyWindow),
		"default_memory_max_rooms":    i(memstore.DefaultMaxRooms),
		"default_memory_max_bytes":    i(memstore.DefaultMaxBytes),
		"default_max_text":            i(pipeline.DefaultMaxTextBytes),
		"default_read_limit":          i(ws.DefaultReadLimit),
		"default_max_rooms":           i(ws.DefaultMaxRooms),
		"default_send_queue":          i(ws.DefaultSendQueue),
		"default_send_window":         i(ws.DefaultMaxInFlightSends),
		"default_send_window_bytes":   i(ws.DefaultMaxInFlightBytes),
		"default_send_queue_bytes":    i(ws.DefaultSendQueueBytes),
		"default_max_page_bytes":      i(ws.DefaultMaxPageBytes),
		"default_history_rate_bytes":  i(ws.DefaultHistoryRate),
		"default_history_burst_bytes": i(ws.DefaultHistoryBurst),
		"default_frame_rate":          i(ws.DefaultFrameRate),
		"default_frame_burst":         i(ws.DefaultFrameBurst),
		"default_pong_wait":           d(ws.DefaultPongWait),
		"default_write_wait":          d(ws.DefaultWriteWait),
		"default_max_conns_per_ip":    i(admission.DefaultMaxConnsPerIP),
		"default_handshake_rate":      i(admission.DefaultHandshakeRate),
		"default_handshake_burst":     i(admission.DefaultHandshakeBurst),
		// derived_max_conns is what --max-conns 0 means on this machine.
		"derived_max_conns": i(admission.DerivedMaxConns()),
	}
}
