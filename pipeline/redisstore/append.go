package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// appendReq is one append waiting for the batcher; done is called with its
// result, once, from the batcher goroutine.
type appendReq struct {
	part int
	room string
	// user and ref name the send's record (see Keys.Sent); ref is empty
	// when the message has none, and it is never deduplicated. The batcher
	// hashes them into the record's key.
	user, ref string
	uuid      string
	payload   []byte
	// md is the message's metadata as a msgpack map whose header counts two
	// entries more than follow: the script appends seq and epoch.
	md   []byte
	done func(pipeline.Appended, error)
	// roomNo is the message's room number in its script call (set by the
	// batcher).
	roomNo int
}

type appendRes struct {
	a   pipeline.Appended
	err error
}

// ErrClosed reports use of a closed backend.
var ErrClosed = errors.New("redisstore: closed")

// Append stores msg in its room stream and bus atomically, after checking
// the send's record (see Keys.Sent): a send already stored in the room's
// epoch stores nothing and returns the original. Calls that arrive while a
// round trip is in flight are stored together in the next one, by the
// batcher goroutine of the room's partition.
func (b *Backend) Append(ctx context.Context, msg *message.Message) (pipeline.Appended, error) {
	req, err := b.appendReq(msg)
	if err != nil {
		return pipeline.Appended{}, err
	}
	res := make(chan appendRes, 1)
	req.done = func(a pipeline.Appended, err error) { res <- appendRes{a, err} }
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return pipeline.Appended{}, ErrClosed
	}
	// Close waits for this send; the batcher drains the queue meanwhile.
	select {
	case b.laneOf(req.part) <- req:
	case <-ctx.Done():
		b.closeMu.RUnlock()
		return pipeline.Appended{}, fmt.Errorf("redisstore: append: %w", ctx.Err())
	}
	b.closeMu.RUnlock()
	select {
	case r := <-res:
		return r.a, r.err
	case <-ctx.Done():
		// The batcher answers into the buffered channel later; the
		// message may still be stored, but it was not acknowledged.
		return pipeline.Appended{}, fmt.Errorf("redisstore: append: %w", ctx.Err())
	}
}

// AppendAsync queues msg for the batcher like Append and returns at once;
// done is called from a batcher goroutine (it must not block). Messages of
// one room are stored in the order they were queued. A full queue
// (4 × MaxBatch per batcher, see Config.InFlight) refuses with pipeline.ErrOverloaded: at most that
// many appends wait, so an overloaded instance answers at once instead of
// queueing without bound.
func (b *Backend) AppendAsync(msg *message.Message, done func(pipeline.Appended, error)) error {
	req, err := b.appendReq(msg)
	if err != nil {
		return err
	}
	req.done = done
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case b.laneOf(req.part) <- req:
		return nil
	default:
		return fmt.Errorf("redisstore: append: %w", pipeline.ErrOverloaded)
	}
}

var _ pipeline.Saturation = (*Backend)(nil)

// Saturated reports whether the queue that room's appends take is full, so
// that an append to it now would be refused with pipeline.ErrOverloaded
// (pipeline.Saturation).
func (b *Backend) Saturated(room string) bool {
	lane := b.laneOf(pipeline.PartitionOf(room, b.cfg.Partitions))
	return len(lane) >= cap(lane)
}

// laneOf returns the queue of the batcher that stores partition p.
func (b *Backend) laneOf(p int) chan appendReq { return b.lanes[p%len(b.lanes)] }

// appendReq prepares the append of msg: its partition and its encoded
// metadata.
func (b *Backend) appendReq(msg *message.Message) (appendReq, error) {
	room := msg.Metadata.Get(pipeline.MetaRoom)
	if room == "" {
		return appendReq{}, fmt.Errorf("redisstore: append: %w", pipeline.ErrIncomplete)
	}
	req := appendReq{
		part: pipeline.PartitionOf(room, b.cfg.Partitions), room: room,
		uuid: msg.UUID, payload: msg.Payload, md: appendMetadata(nil, msg.Metadata),
	}
	if ref := msg.Metadata.Get(pipeline.MetaRef); ref != "" {
		req.user, req.ref = msg.Metadata.Get(pipeline.MetaUser), ref
	}
	return req, nil
}

// appendMetadata appends md to buf as a msgpack map of strings, leaving out
// seq and epoch but counting them in the map's header: the append script
// adds them once it knows them.
func appendMetadata(buf []byte, md message.Metadata) []byte {
	n, size := 2, 5
	for k, v := range md {
		if k != pipeline.MetaSeq && k != pipeline.MetaEpoch {
			n++
			size += len(k) + len(v) + 10
		}
	}
	if buf == nil {
		buf = make([]byte, 0, size)
	}
	switch {
	case n < 16:
		buf = append(buf, 0x80|byte(n))
	case n < 1<<16:
		buf = append(buf, 0xde, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	for k, v := range md {
		if k != pipeline.MetaSeq && k != pipeline.MetaEpoch {
			buf = appendMsgpackString(appendMsgpackString(buf, k), v)
		}
	}
	return buf
}

// appendMsgpackString appends s to buf as a msgpack string.
func appendMsgpackString(buf []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		buf = append(buf, 0xa0|byte(n))
	case n < 1<<8:
		buf = append(buf, 0xd9, byte(n))
	case n < 1<<16:
		buf = append(buf, 0xda, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(buf, s...)
}

// batcher stores the appends queued in lane in batches of at most MaxBatch:
// whatever has queued while the previous round trip was in flight goes in
// the next. It returns when the backend closes, failing what is queued.
func (b *Backend) batcher(lane chan appendReq) {
	bt := &batch{b: b, reqs: make([]appendReq, 0, b.cfg.MaxBatch)}
	for {
		select {
		case <-b.stop:
			failQueued(lane)
			return
		case r := <-lane:
			bt.reqs = append(bt.reqs[:0], r)
		}
	fill:
		for len(bt.reqs) < b.cfg.MaxBatch {
			select {
			case r := <-lane:
				bt.reqs = append(bt.reqs, r)
			default:
				break fill
			}
		}
		bt.run()
	}
}

func failQueued(lane chan appendReq) {
	for {
		select {
		case r := <-lane:
			r.done(pipeline.Appended{}, ErrClosed)
		default:
			return
		}
	}
}

// batch is one batcher's batch of appends and the buffers it reuses from
// batch to batch; only its batcher goroutine uses it.
type batch struct {
	b    *Backend
	reqs []appendReq
	// calls are the batch's script calls (see group).
	calls []scriptCall
	// callOf[p] is the index in calls + 1 of partition p's call (of
	// partition 0's for every partition on a single Redis).
	callOf [MaxPartitions]int
	// args backs the argument lists of calls.
	args []any
	// busNo[p] numbers partition p's bus in the call being built (from
	// 1), and busPart[b-1] is bus b's partition; roomNo numbers its rooms,
	// and roomBus[n-1] is room n's bus.
	busNo   [MaxPartitions]int
	busPart []int
	roomNo  map[string]int
	roomBus []int
	// busLast[p] is the last seq this batcher stored in partition p's
	// bus ("" before its first). The script is given it, or the newest
	// entry the instance heard of there when that is newer (another
	// instance stored it): it tries the bus's next ID above it, so a call
	// does not fail its first XADD on an ID already used within the same
	// millisecond, and looks for the bus's newest entry (which a push
	// names) only after it.
	busLast [MaxPartitions]string
	// key is where a send record's key is built.
	key []byte
	// roomKeys are the key arguments of rooms (stream, epoch), boxed
	// once rather than built for every call; cleared when it holds
	// maxRoomKeys rooms.
	roomKeys map[string][2]any
}

// maxRoomKeys bounds a batcher's cache of room key arguments.
const maxRoomKeys = 4096

// scriptCall is one append script call: the messages of a batch of one
// partition in a Redis Cluster, or the whole batch on a single Redis, in
// batch order until build orders them by bus and room.
type scriptCall struct {
	// args is the whole command: EVALSHA, the SHA, the key count, the
	// keys, the script's arguments.
	args []any
	// reqs are the batch's indexes of the call's messages, in the order
	// they are stored: each room's in batch order.
	reqs []int
	// rooms is the number of rooms of the call.
	rooms int
}

// Lengths of the parts of a script call's argument list.
const (
	// callHead counts EVALSHA, the SHA, the key count and the script's
	// eight leading arguments.
	callHead = 3 + 8
	// callPerMessage bounds the arguments per message: two keys for its
	// bus and the bus's last ID, two for its room and the room's bus
	// number (when they are the call's first of them), its send record and
	// five arguments.
	callPerMessage = 2 + 1 + 2 + 1 + 1 + 5
)

// group sorts the batch's messages into script calls: one per partition in
// a Redis Cluster, where a script's keys must share a slot, and one in all
// on a single Redis. Messages of one room keep their order.
func (bt *batch) group() {
	bt.calls = bt.calls[:0]
	for i, r := range bt.reqs {
		part := 0
		if bt.b.cluster {
			part = r.part
		}
		c := bt.callOf[part]
		if c == 0 {
			if len(bt.calls) < cap(bt.calls) {
				bt.calls = bt.calls[:len(bt.calls)+1]
				last := &bt.calls[len(bt.calls)-1]
				*last = scriptCall{reqs: last.reqs[:0]}
			} else {
				bt.calls = append(bt.calls, scriptCall{})
			}
			c = len(bt.calls)
			bt.callOf[part] = c
		}
		bt.calls[c-1].reqs = append(bt.calls[c-1].reqs, i)
	}
	clear(bt.callOf[:])
}

// build fills in the argument list of every call. The keys and arguments
// are laid out as append.lua's header describes.
func (bt *batch) build() {
	b := bt.b
	if need := callHead*len(bt.calls) + callPerMessage*len(bt.reqs); cap(bt.args) < need {
		bt.args = make([]any, 0, need)
	}
	if bt.roomNo == nil {
		bt.roomNo = make(map[string]int)
		bt.roomKeys = make(map[string][2]any)
	}
	args := bt.args[:0]
	for ci := range bt.calls {
		c := &bt.calls[ci]
		start := len(args)
		args = append(args, "evalsha", appendSHA, 0)
		// Buses, then rooms, numbered in order of first appearance.
		buses := 0
		bt.busPart = bt.busPart[:0]
		for _, i := range c.reqs {
			if p := bt.reqs[i].part; bt.busNo[p] == 0 {
				buses++
				bt.busNo[p] = buses
				bt.busPart = append(bt.busPart, p)
				args = append(args, b.busArgs[p][0], b.busArgs[p][1])
			}
		}
		clear(bt.roomNo)
		bt.roomBus = bt.roomBus[:0]
		for _, i := range c.reqs {
			r := &bt.reqs[i]
			n := bt.roomNo[r.room]
			if n == 0 {
				bt.roomBus = append(bt.roomBus, bt.busNo[r.part])
				n = len(bt.roomBus)
				bt.roomNo[r.room] = n
				keys, ok := bt.roomKeys[r.room]
				if !ok {
					if len(bt.roomKeys) >= maxRoomKeys {
						clear(bt.roomKeys)
					}
					tag := b.tags[r.part]
					keys = [2]any{tag + "room:" + r.room, tag + "epoch:" + r.room}
					bt.roomKeys[r.room] = keys
				}
				args = append(args, keys[0], keys[1])
			}
			r.roomNo = n
		}
		c.rooms = len(bt.roomBus)
		// Each bus's messages together, and within them each room's, in
		// their order: the script keeps the bus and the room at hand, and
		// reads one again when it comes back.
		if !slices.IsSortedFunc(c.reqs, bt.busRoomOrder) {
			slices.SortStableFunc(c.reqs, bt.busRoomOrder)
		}
		for _, i := range c.reqs {
			if r := &bt.reqs[i]; r.ref != "" {
				bt.key = appendSentKey(bt.key[:0], b.tags[r.part], r.room, r.user, r.ref)
				args = append(args, string(bt.key))
			}
		}
		args[start+2] = len(args) - start - 3
		args = append(args, b.fixedArgs[0], b.fixedArgs[1], b.fixedArgs[2], b.fixedArgs[3], pipeline.NewEpoch(), buses, c.rooms, b.pushArg)
		for _, n := range bt.roomBus {
			args = append(args, n)
		}
		for _, p := range bt.busPart {
			args = append(args, b.heard[p].newer(bt.busLast[p]))
		}
		sent := 0
		for _, i := range c.reqs {
			r := &bt.reqs[i]
			bt.busNo[r.part] = 0
			k := 0
			if r.ref != "" {
				sent++
				k = sent
			}
			args = append(args, r.roomNo, k, r.uuid, r.payload, r.md)
		}
		c.args = args[start:len(args):len(args)]
	}
	bt.args = args
}

// busRoomOrder orders the batch's appends i and j by bus, then by room
// (numbered by build).
func (bt *batch) busRoomOrder(i, j int) int {
	ri, rj := &bt.reqs[i], &bt.reqs[j]
	if d := bt.busNo[ri.part] - bt.busNo[rj.part]; d != 0 {
		return d
	}
	return ri.roomNo - rj.roomNo
}

// run stores the batch and answers each of its appends.
func (bt *batch) run() {
	b := bt.b
	defer func() {
		// The next batch must not keep this one's payloads alive.
		clear(bt.reqs)
		clear(bt.args)
		bt.args = bt.args[:0]
		for i := range bt.calls {
			bt.calls[i].args = nil
		}
	}()
	bt.group()
	bt.build()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	cmds, err := b.evalBatch(ctx, bt.calls)
	if err != nil {
		// Only the calls that failed for want of the cached script run
		// again, with the script's text: the others may have been stored
		// (in a Cluster, by another node).
		var again []scriptCall
		var at []int
		for i, c := range cmds {
			if isNoScript(c.Err()) {
				c := bt.calls[i]
				c.args = append([]any{"eval", appendLua}, c.args[2:]...)
				again = append(again, c)
				at = append(at, i)
			}
		}
		if len(again) > 0 {
			if rcmds, rerr := b.evalBatch(ctx, again); len(rcmds) == len(again) {
				for j, i := range at {
					cmds[i] = rcmds[j]
				}
				if rerr == nil && len(again) == len(bt.calls) {
					err = nil
				}
			}
		}
	}
	for ci, c := range bt.calls {
		if ci >= len(cmds) {
			for _, i := range c.reqs {
				bt.reqs[i].done(pipeline.Appended{}, fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, err))
			}
			continue
		}
		replies, cerr := cmds[ci].Slice()
		if cerr == nil && len(replies) != c.rooms+len(c.reqs) {
			cerr = fmt.Errorf("%w: %d replies to %d rooms and %d appends", errBadReply, len(replies), c.rooms, len(c.reqs))
		}
		for j, i := range c.reqs {
			r := &bt.reqs[i]
			if cerr != nil {
				r.done(pipeline.Appended{}, fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, cerr))
				continue
			}
			a, err := appended(r, replies[r.roomNo-1], replies[c.rooms+j])
			if err != nil {
				r.done(pipeline.Appended{}, fmt.Errorf("redisstore: append: %w: %w", pipeline.ErrUnavailable, err))
				continue
			}
			if !a.Duplicate {
				// A call stores each bus's messages in order, so
				// the last one stored has its highest ID.
				bt.busLast[r.part] = a.Seq
			}
			r.done(a, nil)
		}
	}
}

// appended reads the append script's reply about r (see append.lua): the
// epoch of its room and its own entry, its seq, '=' seq ' ' UUID for a
// duplicate, or '!' error.
func appended(r *appendReq, epochReply, reply any) (pipeline.Appended, error) {
	s, _ := reply.(string)
	epoch, _ := epochReply.(string)
	switch {
	case strings.HasPrefix(s, "!"):
		return pipeline.Appended{}, fmt.Errorf("%w: %s", errScript, s[1:])
	case epoch == "":
	case strings.HasPrefix(s, "="):
		if seq, id, ok := strings.Cut(s[1:], " "); ok && seq != "" {
			return pipeline.Appended{ID: id, Seq: seq, Epoch: epoch, Duplicate: true}, nil
		}
	case s != "":
		return pipeline.Appended{ID: r.uuid, Seq: s, Epoch: epoch}, nil
	}
	return pipeline.Appended{}, fmt.Errorf("%w: append script replied %v with epoch %v", errBadReply, reply, epochReply)
}

var (
	// errBadReply reports a reply of the append script that is not its own
	// (e.g. another version of the script under the same SHA).
	errBadReply = errors.New("unexpected reply")
	// errScript reports a message the append script could not store (e.g.
	// its room's key holds something else than a stream).
	errScript = errors.New("append script")
)

// evalBatch runs the script calls in one pipeline. Commands that must
// follow each batch's appends are added to the pipeline after them.
func (b *Backend) evalBatch(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	pipe := b.appendClient.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmd := redis.NewCmd(ctx, c.args...)
		cmd.SetFirstKeyPos(3)                  // every call has the bus's keys
		_ = pipe.Process(ctx, noRetryCmd{cmd}) // queued; Exec reports
		cmds[i] = cmd
	}
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// noRetryCmd is a script call that go-redis must not send again once it
// may have been sent: a call whose reply was lost may have run, and running
// it again would store its messages twice (a send without a ref is not
// deduplicated). The append fails instead, is answered unavailable, and
// the client retries with the same ref, which the script deduplicates.
//
// MaxRetries (-1 on the append client) is not enough in a Cluster: go-redis
// v9's ClusterClient.processPipeline sends the commands of every node again,
// up to MaxRedirects times, that processPipelineNodeConn and
// pipelineReadCmds put back in failedCmds after a write or read error that
// shouldRetry accepts (io.EOF, a reset connection, a timeout) — unless
// cmdsContainNoRetry finds a command whose NoRetry is true in the node's
// commands. Redirects do not depend on NoRetry: pipelineReadCmds hands a
// MOVED or ASK reply (the script did not run) to checkMovedErr first, which
// queues the call for the node named, and a connection that could not be
// had (processPipelineNode, nothing sent) is mapped again too. On a single
// Redis (baseClient.generalProcessPipelineFrom) NoRetry stops retries as
// MaxRetries -1 does. A batch whose first reply is TRYAGAIN, CLUSTERDOWN or
// LOADING (the script did not run) is not sent again either: its appends
// are answered unavailable like any other failure.
type noRetryCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to send the call again (redis.Cmder).
func (noRetryCmd) NoRetry() bool { return true }

// heardID is the newest entry of a bus that the instance heard of (its
// pushed subscription): written by the subscription, read by the batcher.
type heardID struct {
	mu sync.Mutex
	id string
}

// set records id, the newest entry heard of: a subscription hears of
// entries in the bus's order, so id replaces the one before. (Two
// subscriptions of one partition, as while one is restarted, may make it
// go back; and the ID of a bus that was lost stays until the subscription
// hears of the new bus's entries. Either costs the script a full read of
// the newest entry, never a wrong prev: see append.lua.)
func (h *heardID) set(id string) {
	h.mu.Lock()
	h.id = id
	h.mu.Unlock()
}

// newer returns the newer of last, the last entry the caller stored, and
// the one heard of ("" where neither is known).
func (h *heardID) newer(last string) string {
	h.mu.Lock()
	id := h.id
	h.mu.Unlock()
	if id == "" || last != "" && pipeline.CompareSeq(id, last) <= 0 {
		return last
	}
	return id
}
