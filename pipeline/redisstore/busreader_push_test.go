package redisstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// pushScript adds an entry in Watermill's layout to the stream KEYS[1] and
// pushes it on the shard channel of the same name in append.lua's push
// format: prev ' ' seq ' ' #uuid ' ' #metadata ' ' uuid metadata payload.
// ARGV: uuid, payload, metadata.
var pushScript = redis.NewScript(`
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if newest[1] then
  prev = newest[1][1]
end
local id = redis.call('XADD', KEYS[1], '*', '_watermill_message_uuid', ARGV[1], 'payload', ARGV[2], 'metadata', ARGV[3])
redis.call('SPUBLISH', KEYS[1], prev .. ' ' .. id .. ' ' .. #ARGV[1] .. ' ' .. #ARGV[3] .. ' ' .. ARGV[1] .. ARGV[3] .. ARGV[2])
return id
`)

// pushPublisher is a Watermill publisher that writes like the append
// script with pushes on: each message is added to its stream and pushed.
type pushPublisher struct{ c redis.UniversalClient }

func (p pushPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if _, err := p.push(topic, m); err != nil {
			return err
		}
	}
	return nil
}

// push stores and pushes m; it returns its entry ID.
func (p pushPublisher) push(topic string, m *message.Message) (string, error) {
	v, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(topic, m)
	if err != nil {
		return "", err
	}
	return pushScript.Run(context.Background(), p.c, []string{topic},
		v[redisstream.UUIDHeaderKey], v["payload"], v["metadata"]).Text()
}

func (p pushPublisher) Close() error { return nil }

// newPushed returns a pushed subscription to a new stream of srv, with a
// block time so long that it never reads for want of pushes while a test
// runs, and the client's XREAD counter.
func newPushed(t *testing.T, srv *testredis.Server, name string) (<-chan *message.Message, string, *xreadCounter, redis.UniversalClient) {
	t.Helper()
	stream := srv.Prefix + ":" + name
	reads := &xreadCounter{}
	c := newClient(t, srv, func(o *redis.UniversalOptions) { o.ClientName = srv.Prefix + "-" + name })
	c.AddHook(reads)
	ch := subscribeBus(t, context.Background(), c, redisstore.BusSubscriberConfig{BlockTime: time.Minute, Pushed: true}, stream)
	return ch, stream, reads, c
}

// wantUUIDs receives len(want) messages from ch, acks them and checks
// their UUIDs.
func wantUUIDs(t *testing.T, ch <-chan *message.Message, want ...string) {
	t.Helper()
	for i, w := range want {
		m := next(t, ch)
		m.Ack()
		if m.UUID != w {
			t.Fatalf("message %d is %s, want %s", i, m.UUID, w)
		}
	}
}

// TestBusSubscriberPushedListens: once subscribed, a pushed subscription
// hands out pushed entries, in order and with their seqs, without reading
// the stream.
func TestBusSubscriberPushedListens(t *testing.T) {
	srv := testredis.Start(t)
	ch, stream, reads, _ := newPushed(t, srv, "listens")
	pub := pushPublisher{srv.Client()}
	first := message.NewMessage(uuid.NewString(), []byte("first"))
	if _, err := pub.push(stream, first); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, ch, first.UUID)
	before := reads.n.Load()
	var ids, uuids []string
	for i := range 50 {
		m := message.NewMessage(uuid.NewString(), fmt.Appendf(nil, "m%d", i))
		m.Metadata.Set("k", strings.Repeat("v", i))
		id, err := pub.push(stream, m)
		if err != nil {
			t.Fatal(err)
		}
		ids, uuids = append(ids, id), append(uuids, m.UUID)
	}
	for i := range ids {
		m := next(t, ch)
		m.Ack()
		if m.UUID != uuids[i] || string(m.Payload) != fmt.Sprintf("m%d", i) ||
			m.Metadata.Get("k") != strings.Repeat("v", i) || m.Metadata.Get("seq") != ids[i] {
			t.Fatalf("message %d: %s %q k=%q seq=%s, want %s m%d k of %d v seq=%s",
				i, m.UUID, m.Payload, m.Metadata.Get("k"), m.Metadata.Get("seq"), uuids[i], i, i, ids[i])
		}
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Fatalf("%d XREADs for 50 pushed entries, want none", n)
	}
	noMore(t, ch)
}

// TestBusSubscriberPushedCatchesUp: entries that were not pushed (written by
// a writer without pushes) are read as soon as a push names an entry that
// was not handed out as the one before it, or a push cannot be decoded;
// and, with no push at all, after BlockTime.
func TestBusSubscriberPushedCatchesUp(t *testing.T) {
	srv := testredis.Start(t)
	ch, stream, _, c := newPushed(t, srv, "catchup")
	pub := pushPublisher{srv.Client()}
	m1 := message.NewMessage(uuid.NewString(), []byte("pushed 1"))
	if _, err := pub.push(stream, m1); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, ch, m1.UUID)

	_, plain := addEntries(t, c, stream, 3)
	m2 := message.NewMessage(uuid.NewString(), []byte("pushed 2"))
	if _, err := pub.push(stream, m2); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, ch, append(plain, m2.UUID)...)

	_, plain = addEntries(t, c, stream, 2)
	for _, junk := range []string{"junk", "1-1 2-2 99 0 x", "1-1 2-2 -1 0 "} {
		if err := srv.Client().SPublish(context.Background(), stream, junk).Err(); err != nil {
			t.Fatal(err)
		}
	}
	wantUUIDs(t, ch, plain...)

	// No push after them: the stream is read after BlockTime. (The first
	// push proves the subscription past its first read.)
	quiet := srv.Prefix + ":quiet"
	qch := subscribeBus(t, context.Background(), newClient(t, srv, nil),
		redisstore.BusSubscriberConfig{BlockTime: 200 * time.Millisecond, Pushed: true}, quiet)
	m3 := message.NewMessage(uuid.NewString(), []byte("pushed 3"))
	if _, err := pub.push(quiet, m3); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, qch, m3.UUID)
	_, plain = addEntries(t, c, quiet, 2)
	wantUUIDs(t, qch, plain...)
	noMore(t, ch)
	noMore(t, qch)
}

// TestBusSubscriberPushedLossCloses: a pushed subscription whose channel's
// connection is lost closes its channel, as a failed read does, after
// handing out what it had.
func TestBusSubscriberPushedLossCloses(t *testing.T) {
	srv := testredis.Start(t)
	ch, stream, _, _ := newPushed(t, srv, "loss")
	pub := pushPublisher{srv.Client()}
	m := message.NewMessage(uuid.NewString(), []byte("one"))
	if _, err := pub.push(stream, m); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, ch, m.UUID)
	admin := srv.Client()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for line := range strings.SplitSeq(list, "\n") {
		if strings.Contains(line, " name="+srv.Prefix+"-loss ") && strings.Contains(line, " flags=P ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d subscribed connections, want 1:\n%s", killed, list)
	}
	wantClosed(t, ch, 5*time.Second, "after its connection was lost (block time 1m)")
}

// TestPushesStayInTheirDatabase: two deployments with the same prefix in
// two databases of one Redis do not get each other's pushes (pub/sub
// channels are shared by the databases): a subscription in database 0
// hands out the messages stored there, and none of database 1's.
func TestPushesStayInTheirDatabase(t *testing.T) {
	srv := testredis.Start(t)
	if !strings.HasSuffix(srv.URL, "/0") {
		t.Fatalf("test server URL %s does not name database 0", srv.URL)
	}
	url1 := strings.TrimSuffix(srv.URL, "/0") + "/1"
	prefix := srv.Prefix + "db"
	a := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: prefix, Partitions: 1})
	b := newBackend(t, redisstore.Config{URL: url1, Prefix: prefix, Partitions: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := a.Subscribe(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription is listening once its channel has a subscriber.
	waitSubscribers(t, srv.Client(), a.Keys().BusChannel(0, 0), 1)
	for i := range 5 {
		mustAppend(t, b, send("lobby", "", fmt.Sprintf("database 1, %d", i)))
	}
	own := mustAppend(t, a, send("lobby", "", "database 0"))
	wantUUIDs(t, ch, own.ID)
	noMore(t, ch)
}

// noMore fails the test when ch hands out a message within 300ms.
func noMore(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("got %s %q, want nothing more", m.UUID, m.Payload)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// TestMixedPushingAndPolling: instances with and without pushes share a
// Redis, as in a rolling upgrade: a pushed subscription hands out every
// message in bus order, those stored without a push (by an instance with
// PollBus) included, and so does a polling one.
func TestMixedPushingAndPolling(t *testing.T) {
	srv := testredis.Start(t)
	prefix := srv.Prefix + "mix"
	pushing := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: prefix, Partitions: 1})
	polling := newBackend(t, redisstore.Config{URL: srv.URL, Prefix: prefix, Partitions: 1, PollBus: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pushed, err := pushing.Subscribe(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	polled, err := polling.Subscribe(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		b := pushing
		if i%3 != 0 { // two of three, and the last, stored without a push
			b = polling
		}
		want = append(want, mustAppend(t, b, send("lobby", "", fmt.Sprintf("m%d", i))).ID)
	}
	wantUUIDs(t, pushed, want...)
	wantUUIDs(t, polled, want...)
	noMore(t, pushed)
	noMore(t, polled)
}

// TestBusSubscriberPushedSilentCloses: a pushed subscription whose channel
// stops answering (its server paused) PINGs it after BlockTime quiet, and
// closes its channel when the PING is not answered within another
// BlockTime, well before the server answers again.
func TestBusSubscriberPushedSilentCloses(t *testing.T) {
	srv := testredis.Start(t)
	if !srv.Private() {
		t.Skip("pausing a shared server would stall other tests")
	}
	stream := srv.Prefix + ":silent"
	ch := subscribeBus(t, context.Background(), newClient(t, srv, nil),
		redisstore.BusSubscriberConfig{BlockTime: 200 * time.Millisecond, Pushed: true}, stream)
	m := message.NewMessage(uuid.NewString(), []byte("one"))
	if _, err := (pushPublisher{srv.Client()}).push(stream, m); err != nil {
		t.Fatal(err)
	}
	wantUUIDs(t, ch, m.UUID)
	if err := srv.Client().Do(context.Background(), "CLIENT", "PAUSE", 4000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	wantClosed(t, ch, 3*time.Second, "into a 4s pause of the server (block time 200ms)")
}
