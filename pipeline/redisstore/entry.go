package redisstore

import (
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
)

// decodeFast decodes an entry in the layout chatstream writes (string
// fields; metadata a msgpack map of strings, as appendMetadata and
// Watermill's marshaller encode it) without reflection, the keys and values
// of its metadata sharing the metadata field's memory. ok is false for an
// entry in any other form; the caller then decodes it with Watermill's
// unmarshaller, which takes every form it takes or reports why not.
func decodeFast(values map[string]any) (msg *message.Message, ok bool) {
	id, ok := values[redisstream.UUIDHeaderKey].(string)
	if !ok {
		return nil, false
	}
	payload := ""
	if p := values["payload"]; p != nil {
		if payload, ok = p.(string); !ok {
			return nil, false
		}
	}
	md := ""
	if m := values["metadata"]; m != nil {
		if md, ok = m.(string); !ok {
			return nil, false
		}
	}
	return decodeParts(id, payload, md)
}

// decodeParts is decodeFast of an entry's fields: its UUID, payload and
// metadata ("" for none).
func decodeParts(id, payload, md string) (msg *message.Message, ok bool) {
	msg = message.NewMessage(id, []byte(payload))
	if md == "" {
		return msg, true
	}
	if msg.Metadata, ok = decodeStringMap(md); !ok {
		return nil, false
	}
	return msg, true
}

// decodeStringMap decodes s, a msgpack map whose keys and values are all
// strings; ok is false for anything else or any byte left over.
func decodeStringMap(s string) (md message.Metadata, ok bool) {
	n, i, ok := mapHeader(s)
	if !ok || n > uint64(len(s)-i)/2 { // each entry takes two bytes at least
		return nil, false
	}
	// Sized for its entries only: a map of up to eight is one group of
	// slots, where room for a ninth makes it a table (twice the bytes and
	// allocations). Chatstream's messages have eight, the seq among them,
	// so a reader sets the seq only when it differs (setSeq): any write to
	// a full group, even of a key it holds, makes it a table.
	md = make(message.Metadata, n)
	for range n {
		var k, v string
		if k, i, ok = msgpackString(s, i); !ok {
			return nil, false
		}
		if v, i, ok = msgpackString(s, i); !ok {
			return nil, false
		}
		md[k] = v
	}
	return md, i == len(s)
}

// mapHeader reads the msgpack map header at the start of s: the number of
// entries and where they start.
func mapHeader(s string) (n uint64, next int, ok bool) {
	switch {
	case len(s) == 0:
		return 0, 0, false
	case s[0]&0xf0 == 0x80: // fixmap
		return uint64(s[0] & 0x0f), 1, true
	case s[0] == 0xde && len(s) >= 3: // map 16
		return bigEndian(s[1:3]), 3, true
	case s[0] == 0xdf && len(s) >= 5: // map 32
		return bigEndian(s[1:5]), 5, true
	}
	return 0, 0, false
}

// msgpackString reads the msgpack string at s[i:]: its value and where the
// next one starts.
func msgpackString(s string, i int) (v string, next int, ok bool) {
	if i >= len(s) {
		return "", 0, false
	}
	var n uint64
	switch b := s[i]; {
	case b&0xe0 == 0xa0: // fixstr
		n, i = uint64(b&0x1f), i+1
	case b == 0xd9 && i+2 <= len(s): // str 8
		n, i = bigEndian(s[i+1:i+2]), i+2
	case b == 0xda && i+3 <= len(s): // str 16
		n, i = bigEndian(s[i+1:i+3]), i+3
	case b == 0xdb && i+5 <= len(s): // str 32
		n, i = bigEndian(s[i+1:i+5]), i+5
	default:
		return "", 0, false
	}
	if n > uint64(len(s)-i) { // compared unsigned: no int overflow on 32-bit
		return "", 0, false
	}
	end := i + int(n)
	return s[i:end], end, true
}

// bigEndian reads b (at most 4 bytes) as a big-endian unsigned number.
func bigEndian(b string) uint64 {
	var n uint64
	for i := range len(b) {
		n = n<<8 | uint64(b[i])
	}
	return n
}

// setSeq sets msg's seq metadata to seq, writing only when it differs: the
// metadata of an entry in chatstream's layout already holds it, and a
// write to a full map grows it (see decodeStringMap).
func setSeq(msg *message.Message, seq string) {
	if msg.Metadata.Get(pipeline.MetaSeq) != seq {
		msg.Metadata.Set(pipeline.MetaSeq, seq)
	}
}
