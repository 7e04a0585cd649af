package redisstore

import (
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack"

	"github.com/chatstream/chatstream/pipeline"
)

// watermillDecode decodes values with Watermill's own unmarshaller,
// reporting a panic (it type-asserts fields) as failure.
func watermillDecode(values map[string]any) (msg *message.Message, ok bool) {
	defer func() {
		if recover() != nil {
			msg, ok = nil, false
		}
	}()
	msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	return msg, err == nil
}

// sameMessage reports whether a and b carry the same UUID, payload and
// metadata.
func sameMessage(a, b *message.Message) bool {
	return a.UUID == b.UUID && string(a.Payload) == string(b.Payload) && maps.Equal(a.Metadata, b.Metadata)
}

// decodeFast decodes what chatstream and Watermill write exactly as
// Watermill's unmarshaller does: metadata of every size of map and string
// header, written by appendMetadata and by msgpack.
func TestDecodeFastMatchesWatermill(t *testing.T) {
	sizes := []int{0, 1, 31, 32, 255, 256, 65535, 65536}
	var mds []message.Metadata
	mds = append(mds, message.Metadata{})
	for _, n := range sizes {
		mds = append(mds, message.Metadata{"room": strings.Repeat("r", n), strings.Repeat("k", n): "v"})
	}
	many := message.Metadata{}
	for i := range 70000 { // a map 32 header
		many[strconv.Itoa(i)] = "v"
	}
	if len(many) < 1<<16 {
		t.Fatalf("%d entries: too few for a map 32 header", len(many))
	}
	mds = append(mds, many)
	for i, md := range mds {
		packed, err := msgpack.Marshal(map[string]string(md))
		if err != nil {
			t.Fatal(err)
		}
		for name, enc := range map[string]string{"msgpack": string(packed), "appendMetadata": appendStrings(md)} {
			values := map[string]any{redisstream.UUIDHeaderKey: "id-1", "payload": "hello", "metadata": enc}
			want, ok := watermillDecode(values)
			if !ok {
				t.Fatalf("metadata %d (%s): Watermill cannot decode it", i, name)
			}
			got, ok := decodeFast(values)
			if !ok {
				t.Fatalf("metadata %d (%s, %d bytes): decodeFast refused it", i, name, len(enc))
			}
			if !sameMessage(got, want) {
				t.Fatalf("metadata %d (%s): decodeFast gave %d entries, Watermill %d", i, name, len(got.Metadata), len(want.Metadata))
			}
		}
	}
	for name, values := range map[string]map[string]any{
		"no metadata":    {redisstream.UUIDHeaderKey: "id-2", "payload": "x"},
		"empty metadata": {redisstream.UUIDHeaderKey: "id-3", "payload": "x", "metadata": ""},
		"no payload":     {redisstream.UUIDHeaderKey: "id-4"},
	} {
		want, _ := watermillDecode(values)
		got, ok := decodeFast(values)
		if !ok || !sameMessage(got, want) {
			t.Fatalf("%s: decodeFast gave %v, %v; want %v", name, got, ok, want)
		}
	}
}

// appendStrings encodes md the way the append path does, without the two
// entries the script adds (so with a header that counts only md's).
func appendStrings(md message.Metadata) string {
	enc := appendMetadata(nil, md) // counts two entries more
	n, next, _ := mapHeader(string(enc))
	n -= 2
	switch {
	case n < 16:
		return string(append([]byte{0x80 | byte(n)}, enc[next:]...))
	case n < 1<<16:
		return string(append([]byte{0xde, byte(n >> 8), byte(n)}, enc[next:]...))
	}
	return string(append([]byte{0xdf, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, enc[next:]...))
}

// FuzzDecodeFast: whatever the metadata bytes, decodeFast either refuses
// them or decodes them exactly as Watermill's unmarshaller does; it never
// panics.
func FuzzDecodeFast(f *testing.F) {
	f.Add(appendStrings(message.Metadata{"room": "lobby", "user": "alice"}))
	f.Add("\x81\xa1a\xa1b")
	f.Add("\xde\x00\x01\xd9\x01a\xda\x00\x01b")
	f.Add("\xdf\xff\xff\xff\xff")
	f.Add("\x81\xa1a")
	f.Add("\x81\xc4\x01a\xa1b") // bin 8: not taken
	f.Add("\xc0")
	f.Add("\x81\xdb\x80\x00\x00\x00a") // lengths that overflow a 32-bit int
	f.Add("\x81\xdb\xff\xff\xff\xffa")
	f.Fuzz(func(t *testing.T, md string) {
		values := map[string]any{redisstream.UUIDHeaderKey: "id", "payload": "p", "metadata": md}
		got, ok := decodeFast(values)
		if !ok {
			return
		}
		want, wok := watermillDecode(values)
		if !wok || !sameMessage(got, want) {
			t.Fatalf("metadata %q: decodeFast gave %v, Watermill %v (ok %v)", md, got.Metadata, want, wok)
		}
	})
}

// An entry whose metadata is msgpack nil, which Watermill's unmarshaller
// decodes to a nil map, becomes a message with metadata all the same: its
// seq is set, nothing panics.
func TestEntryMessageNilMetadata(t *testing.T) {
	msg := entryMessage(redis.XMessage{ID: "1-1", Values: map[string]any{
		redisstream.UUIDHeaderKey: "id", "payload": "p", "metadata": "\xc0",
	}})
	if got := msg.Metadata.Get(pipeline.MetaSeq); got != "1-1" {
		t.Fatalf("seq %q, want 1-1", got)
	}
}

// TestDecodedMetadataStaysOneGroup proves that a delivered message's
// metadata of eight entries (what the gateway stores: seven and the seq)
// costs no more allocations than one of seven: a Go map holds up to eight
// in one group of slots, and grows into a table when sized for a ninth or
// written to when full, even to a key it holds (so the readers set the
// seq only when it differs).
func TestDecodedMetadataStaysOneGroup(t *testing.T) {
	const id = "1700000000000-0"
	encode := func(n int) string {
		keys := []string{pipeline.MetaRoom, pipeline.MetaUser, pipeline.MetaConnID, pipeline.MetaRef,
			pipeline.MetaReceivedAt, pipeline.MetaEpoch, pipeline.MetaCorrelationID}[:n-1]
		md := []byte{0x80 | byte(n)}
		for _, k := range keys {
			md = appendMsgpackString(appendMsgpackString(md, k), "value-of-"+k)
		}
		return string(appendMsgpackString(appendMsgpackString(md, pipeline.MetaSeq), id))
	}
	for _, tc := range []struct {
		name   string
		decode func(md string) *message.Message
	}{
		{"entry", func(md string) *message.Message {
			return entryMessage(redis.XMessage{ID: id, Values: map[string]any{
				redisstream.UUIDHeaderKey: "uuid", "payload": "text", "metadata": md}})
		}},
		{"push", func(md string) *message.Message {
			return push{prev: "0-0", id: id, uuid: "uuid", metadata: md, payload: "text"}.toMessage()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocs := map[int]float64{}
			for _, n := range []int{7, 8} {
				md := encode(n)
				if msg := tc.decode(md); len(msg.Metadata) != n || msg.Metadata.Get(pipeline.MetaSeq) != id {
					t.Fatalf("%d entries decode as %v", n, msg.Metadata)
				}
				allocs[n] = testing.AllocsPerRun(100, func() { _ = tc.decode(md) })
			}
			if allocs[8] > allocs[7] {
				t.Errorf("eight metadata entries take %v allocations, seven %v", allocs[8], allocs[7])
			}
		})
	}
}
