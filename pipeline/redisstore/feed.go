package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/pipeline"
)

// blockTime is how long one XREAD of a partition blocks; it bounds how long
// a cancelled subscription keeps its goroutine and its connection.
const blockTime = DefaultBusBlockTime

// busReadCount caps the entries one XREAD of a partition takes; a
// subscription holds at most twice as many decoded messages.
const busReadCount = DefaultBusReadCount

// MetaUndecodable marks a message made from a stream entry that could not be
// decoded; it carries the reason. pipeline.FromWatermill rejects such
// messages, so the delivery loop logs, counts and skips them.
const MetaUndecodable = "_chatstream_undecodable"

// Subscribe follows partition p's bus with a BusSubscriber (pushed unless
// PollBus, else fan-out XREAD, up to busReadCount entries per round trip),
// starting after the seq after. For after == "" it starts after the bus's current last entry,
// resolved now, so no message stored after Subscribe returns is missed.
// The channel closes when ctx is done or a read fails; the reader then
// stops within blockTime.
func (b *Backend) Subscribe(ctx context.Context, p int, after string) (<-chan *message.Message, error) {
	if p < 0 || p >= b.cfg.Partitions {
		return nil, fmt.Errorf("redisstore: subscribe: partition %d of %d", p, b.cfg.Partitions)
	}
	bus := b.keys.Bus(p)
	// Reading the bus's last ID also proves that Redis answers, so a
	// subscription is opened only when it can read: during an outage
	// Subscribe fails and the caller retries, instead of a subscription
	// that fails on every read.
	last, err := b.lastID(ctx, bus)
	if err != nil {
		return nil, err
	}
	if after == "" {
		after = last
	}
	// One subscriber per subscription: its position is its configuration.
	// It is never closed; ctx ends the subscription.
	cfg := BusSubscriberConfig{
		After:     after,
		ReadCount: busReadCount,
		BlockTime: blockTime,
		// A read past a trimmed position takes at least the bus's
		// MAXLEN entries (approximate trimming keeps more).
		ReportGapsAt:  int(min(busReadCount, b.cfg.BusMaxLen)),
		Pushed:        !b.cfg.PollBus,
		ChannelSuffix: b.channelSuffix,
	}
	if b.primary != nil {
		cfg.PrimaryChanges = b.primary.Changes
	}
	if cfg.Pushed {
		cfg.Heard = b.heard[p].set
	}
	sub, err := NewBusSubscriber(cfg, b.subClient, b.wlog)
	if err != nil {
		return nil, fmt.Errorf("redisstore: subscriber: %w", err)
	}
	ch, err := sub.Subscribe(ctx, bus)
	if err != nil {
		return nil, fmt.Errorf("redisstore: subscribe %s: %w", bus, err)
	}
	return ch, nil
}

// lastID returns the last entry ID ever added to stream, "0-0" when it does
// not exist yet.
func (b *Backend) lastID(ctx context.Context, stream string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	info, err := b.client.XInfoStream(ctx, stream).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return "0-0", nil
		}
		return "", fmt.Errorf("redisstore: %w: %w", pipeline.ErrUnavailable, err)
	}
	return info.LastGeneratedID, nil
}

// isNoSuchKey reports XINFO's reply for a stream that does not exist.
func isNoSuchKey(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "no such key")
}

// tolerantUnmarshaller decodes entries in Watermill's layout; an entry it
// cannot decode becomes a message marked MetaUndecodable instead of an
// error, because an error would end the subscription.
type tolerantUnmarshaller struct{}

func (tolerantUnmarshaller) Unmarshal(values map[string]any) (msg *message.Message, err error) {
	if msg, ok := decodeFast(values); ok {
		return msg, nil
	}
	defer func() {
		if r := recover(); r != nil { // the default unmarshaller type-asserts fields
			msg, err = undecodable(values, fmt.Sprint(r)), nil
		}
	}()
	m, derr := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	if derr != nil {
		return undecodable(values, derr.Error()), nil
	}
	if m.Metadata == nil { // metadata encoded as msgpack nil
		m.Metadata = make(message.Metadata)
	}
	return m, nil
}

func undecodable(values map[string]any, reason string) *message.Message {
	id, _ := values[redisstream.UUIDHeaderKey].(string)
	if id == "" {
		id = "unknown"
	}
	m := message.NewMessage(id, nil)
	m.Metadata.Set(MetaUndecodable, reason)
	return m
}

// DecodeEntry decodes any chatstream stream entry (room, bus or dead
// letter) into its Watermill message, with MetaSeq set to the entry ID.
func DecodeEntry(x redis.XMessage) (*message.Message, error) {
	msg := entryMessage(x)
	if reason := msg.Metadata.Get(MetaUndecodable); reason != "" {
		return nil, fmt.Errorf("entry %s: %w: %s", x.ID, ErrUndecodable, reason)
	}
	return msg, nil
}

// entryMessage decodes x like DecodeEntry, but an entry it cannot decode
// becomes a message marked MetaUndecodable; either way MetaSeq is the entry
// ID.
func entryMessage(x redis.XMessage) *message.Message {
	msg, _ := tolerantUnmarshaller{}.Unmarshal(x.Values) // never fails: see tolerantUnmarshaller
	setSeq(msg, x.ID)
	return msg
}

// decodeEntry turns a room stream entry into a Message; its seq is the entry ID.
func decodeEntry(x redis.XMessage) (pipeline.Message, error) {
	msg, err := DecodeEntry(x)
	if err != nil {
		return pipeline.Message{}, err
	}
	m, err := pipeline.FromWatermill(msg)
	if err != nil {
		return pipeline.Message{}, fmt.Errorf("entry %s: %w", x.ID, err)
	}
	return m, nil
}

// ErrUndecodable reports a stream entry that is not in chatstream's layout.
var ErrUndecodable = errors.New("undecodable entry")

var _ pipeline.BusStater = (*Backend)(nil)

// BusState reads partition p's bus epoch and its newest and oldest entry
// IDs in one transaction. A bus that does not exist has an empty state.
func (b *Backend) BusState(ctx context.Context, p int) (pipeline.BusState, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	bus := b.keys.Bus(p)
	pipe := b.client.TxPipeline()
	exists := pipe.Exists(ctx, bus)
	epoch := pipe.Get(ctx, b.keys.BusEpoch(p))
	last := pipe.XRevRangeN(ctx, bus, "+", "-", 1)
	oldest := pipe.XRangeN(ctx, bus, "-", "+", 1)
	info := pipe.XInfoStream(ctx, bus)
	_, _ = pipe.Exec(ctx) // each reply is checked below: a missing epoch is redis.Nil, a missing bus "no such key"
	var st pipeline.BusState
	if err := errors.Join(exists.Err(), last.Err(), oldest.Err()); err != nil {
		return st, b.unavailable(err)
	}
	e, err := epoch.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return st, b.unavailable(err)
	}
	if exists.Val() == 0 {
		return st, nil // lost or never written: its epoch, if any, is stale
	}
	st.Epoch = e
	if xs := last.Val(); len(xs) > 0 {
		st.Last = xs[0].ID
	}
	if xs := oldest.Val(); len(xs) > 0 {
		st.Oldest = xs[0].ID
	}
	// Redis 7 records the newest entry deleted by XDEL (the append script
	// deletes the bus entry of a message it could not store), not by
	// trimming. Once trimming removed entries above it, it is not the
	// newest removed: the caller must go by Oldest.
	if i, err := info.Result(); err == nil && i.MaxDeletedEntryID != "0-0" &&
		st.Oldest != "" && pipeline.CompareSeq(i.MaxDeletedEntryID, st.Oldest) > 0 {
		st.Trimmed = i.MaxDeletedEntryID
	}
	return st, nil
}
