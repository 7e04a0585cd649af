package ws

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline"
)

func intPtr(n int) *int { return &n }

// frameString renders a frame for failure messages, showing *History.
func frameString(f ClientFrame) string {
	b, err := json.Marshal(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// room64 is the longest valid room name.
var room64 = strings.Repeat("r", pipeline.MaxRoomLen)

// refusedFrames are client frames that DecodeFrame refuses, with the code
// and the ref and room it must return.
var refusedFrames = []struct {
	name  string
	input string
	code  string
	// ref and room are the values expected in the returned frame.
	ref, room string
}{
	// Not one JSON object.
	{name: "not JSON", input: `hello`, code: CodeBadFrame},
	{name: "empty input", input: ``, code: CodeBadFrame},
	{name: "only whitespace", input: " \n\t", code: CodeBadFrame},
	{name: "truncated object", input: `{"type":"join","room":"lobby"`, code: CodeBadFrame},
	{name: "single quotes", input: `{'type':'join','room':'lobby'}`, code: CodeBadFrame},
	{name: "two objects", input: `{"type":"leave","room":"lobby"} {"type":"leave","room":"lobby"}`, code: CodeBadFrame},
	{name: "two objects on two lines", input: "{\"type\":\"leave\",\"room\":\"lobby\"}\n{\"type\":\"leave\",\"room\":\"lobby\"}", code: CodeBadFrame},
	{name: "ping with a control character in its ref", input: `{"type":"ping","ref":"p\u0001"}`, code: pipeline.CodeInvalid},
	{name: "trailing word", input: `{"type":"leave","room":"lobby"} garbage`, code: CodeBadFrame},
	{name: "trailing number", input: `{"type":"leave","room":"lobby"}5`, code: CodeBadFrame},
	{name: "JSON null", input: `null`, code: CodeBadFrame},
	{name: "JSON array", input: `[{"type":"join","room":"lobby"}]`, code: CodeBadFrame},
	{name: "JSON empty array", input: `[]`, code: CodeBadFrame},
	{name: "JSON string", input: `"join"`, code: CodeBadFrame},
	{name: "JSON number", input: `42`, code: CodeBadFrame},
	{name: "JSON boolean", input: `true`, code: CodeBadFrame},
	{name: "empty object", input: `{}`, code: CodeBadFrame},

	// The type.
	{name: "unknown type", input: `{"type":"dance","room":"lobby","ref":"r1"}`, code: CodeBadFrame, ref: "r1", room: "lobby"},
	{name: "server frame type", input: `{"type":"message","room":"lobby","ref":"r1"}`, code: CodeBadFrame, ref: "r1", room: "lobby"},
	{name: "type in upper case", input: `{"type":"JOIN","room":"lobby"}`, code: CodeBadFrame, room: "lobby"},
	{name: "missing type", input: `{"room":"lobby","ref":"r1"}`, code: CodeBadFrame, ref: "r1", room: "lobby"},
	{name: "empty type", input: `{"type":"","room":"lobby","ref":"r1"}`, code: CodeBadFrame, ref: "r1", room: "lobby"},

	// Fields of the wrong JSON type.
	{name: "type is a number", input: `{"type":5}`, code: CodeBadFrame},
	{name: "type is an object", input: `{"type":{}}`, code: CodeBadFrame},
	{name: "room is a number", input: `{"type":"join","room":7}`, code: CodeBadFrame},
	{name: "room is an array", input: `{"type":"join","room":["lobby"]}`, code: CodeBadFrame},
	{name: "history is a string", input: `{"type":"join","history":"5"}`, code: CodeBadFrame},
	{name: "history is fractional", input: `{"type":"join","history":1.5}`, code: CodeBadFrame},
	{name: "history overflows int", input: `{"type":"join","history":99999999999999999999}`, code: CodeBadFrame},
	{name: "since is a number", input: `{"type":"join","since":123}`, code: CodeBadFrame},
	{name: "limit is a string", input: `{"type":"history","limit":"10"}`, code: CodeBadFrame},
	{name: "text is a number", input: `{"type":"send","text":5}`, code: CodeBadFrame},
	{name: "text is an object", input: `{"type":"send","text":{"a":1}}`, code: CodeBadFrame},
	{name: "ref is a boolean", input: `{"type":"send","ref":true}`, code: CodeBadFrame},

	// Bytes that are not UTF-8: nothing is read from the frame.
	{name: "invalid UTF-8 in text", input: "{\"type\":\"send\",\"room\":\"lobby\",\"ref\":\"r1\",\"text\":\"a\xffb\"}", code: pipeline.CodeInvalid},
	{name: "invalid UTF-8 in room", input: "{\"type\":\"join\",\"room\":\"lob\xc3by\"}", code: pipeline.CodeInvalid},
	{name: "invalid UTF-8 in ref", input: "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":\"\xfe\"}", code: pipeline.CodeInvalid},
	{name: "overlong UTF-8 encoding", input: "{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"\xc0\xaf\"}", code: pipeline.CodeInvalid},
	{name: "UTF-8 encoded surrogate", input: "{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"\xed\xa0\x80\"}", code: pipeline.CodeInvalid},
	{name: "invalid UTF-8 after the object", input: "{\"type\":\"join\",\"room\":\"lobby\"}\xff", code: pipeline.CodeInvalid},

	// Room names.
	{name: "room missing", input: `{"type":"join","ref":"r1"}`, code: pipeline.CodeInvalid, ref: "r1"},
	{name: "room empty", input: `{"type":"join","room":"","ref":"r1"}`, code: pipeline.CodeInvalid, ref: "r1"},
	{name: "room of 65 characters", input: `{"type":"join","room":"` + room64 + `x","ref":"r1"}`, code: pipeline.CodeInvalid, ref: "r1", room: room64 + "x"},
	{name: "room with a space", input: `{"type":"join","room":"no spaces","ref":"r1"}`, code: pipeline.CodeInvalid, ref: "r1", room: "no spaces"},
	{name: "room with a slash", input: `{"type":"send","room":"a/b","ref":"r1","text":"x"}`, code: pipeline.CodeInvalid, ref: "r1", room: "a/b"},
	{name: "room with dot-dot-slash", input: `{"type":"join","room":"../etc"}`, code: pipeline.CodeInvalid, room: "../etc"},
	{name: "room with accented letter", input: `{"type":"join","room":"café"}`, code: pipeline.CodeInvalid, room: "café"},
	{name: "room in Cyrillic", input: `{"type":"join","room":"комната"}`, code: pipeline.CodeInvalid, room: "комната"},
	{name: "room with emoji", input: `{"type":"leave","room":"party🎉"}`, code: pipeline.CodeInvalid, room: "party🎉"},
	{name: "room with NUL escape", input: `{"type":"join","room":"a\u0000b"}`, code: pipeline.CodeInvalid, room: "a\x00b"},
	{name: "room with fullwidth digit", input: `{"type":"join","room":"room１"}`, code: pipeline.CodeInvalid, room: "room１"},

	// Refs: an invalid ref is not echoed, the room still is.
	{name: "ref of 65 characters", input: `{"type":"send","room":"lobby","text":"x","ref":"` + strings.Repeat("f", 65) + `"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref of 65 multibyte characters", input: `{"type":"send","room":"lobby","text":"x","ref":"` + strings.Repeat("é", 65) + `"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with BEL", input: `{"type":"send","room":"lobby","text":"x","ref":"a\u0007"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with newline", input: `{"type":"send","room":"lobby","text":"x","ref":"a\nb"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with tab", input: `{"type":"send","room":"lobby","text":"x","ref":"\t"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with DEL", input: `{"type":"send","room":"lobby","text":"x","ref":"\u007f"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with C1 control", input: `{"type":"send","room":"lobby","text":"x","ref":"\u0085"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with zero-width space", input: `{"type":"send","room":"lobby","text":"x","ref":"a\u200bb"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "ref with escaped lone surrogate", input: `{"type":"send","room":"lobby","text":"x","ref":"\ud800"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "bad ref on unknown type", input: `{"type":"dance","room":"lobby","ref":"\u0000"}`, code: pipeline.CodeInvalid, room: "lobby"},

	// Join.
	{name: "history -1", input: `{"type":"join","room":"lobby","history":-1,"ref":"j"}`, code: pipeline.CodeInvalid, ref: "j", room: "lobby"},
	{name: "history 501", input: `{"type":"join","room":"lobby","history":501,"ref":"j"}`, code: pipeline.CodeInvalid, ref: "j", room: "lobby"},
	{name: "since a word", input: `{"type":"join","room":"lobby","since":"yesterday","ref":"j"}`, code: pipeline.CodeInvalid, ref: "j", room: "lobby"},
	{name: "since without dash", input: `{"type":"join","room":"lobby","since":"123"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since without counter", input: `{"type":"join","room":"lobby","since":"123-"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since without ms", input: `{"type":"join","room":"lobby","since":"-4"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since with three parts", input: `{"type":"join","room":"lobby","since":"1-2-3"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since negative", input: `{"type":"join","room":"lobby","since":"-1-2"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since with plus sign", input: `{"type":"join","room":"lobby","since":"+1-2"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since with spaces", input: `{"type":"join","room":"lobby","since":" 1-2"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "since overflows uint64", input: `{"type":"join","room":"lobby","since":"18446744073709551616-0"}`, code: pipeline.CodeInvalid, room: "lobby"},

	// History.
	{name: "history before a word", input: `{"type":"history","room":"lobby","before":"bad","ref":"h"}`, code: pipeline.CodeInvalid, ref: "h", room: "lobby"},
	{name: "history before without counter", input: `{"type":"history","room":"lobby","before":"5"}`, code: pipeline.CodeInvalid, room: "lobby"},
	{name: "history limit 501", input: `{"type":"history","room":"lobby","limit":501,"ref":"h"}`, code: pipeline.CodeInvalid, ref: "h", room: "lobby"},
	{name: "history limit -1", input: `{"type":"history","room":"lobby","limit":-1}`, code: pipeline.CodeInvalid, room: "lobby"},

	// Corners where encoding/json, which first defined the protocol's
	// decoding, sets the behaviour.
	{name: "repeated name: the last value has the wrong type", input: `{"type":"leave","room":"lobby","room":5}`, code: CodeBadFrame},
	{name: "history with an exponent", input: `{"type":"join","room":"lobby","history":1e2}`, code: CodeBadFrame, room: "lobby"},
	{name: "history of 1.0", input: `{"type":"join","room":"lobby","history":1.0}`, code: CodeBadFrame, room: "lobby"},
	{name: "history just beyond int64", input: `{"type":"join","room":"lobby","history":9223372036854775808}`, code: CodeBadFrame, room: "lobby"},
	{name: "limit 1e400", input: `{"type":"history","room":"lobby","limit":1e400}`, code: CodeBadFrame, room: "lobby"},
	{name: "byte-order mark", input: "\ufeff{\"type\":\"leave\",\"room\":\"lobby\"}", code: CodeBadFrame},
	{name: "leading no-break space", input: "\u00a0{\"type\":\"leave\",\"room\":\"lobby\"}", code: CodeBadFrame},
	{name: "trailing comma", input: `{"type":"leave","room":"lobby",}`, code: CodeBadFrame},
	{name: "name that is not a string", input: `{5:"leave"}`, code: CodeBadFrame},
	{name: "unknown field nested beyond the depth limit", input: nestedFrame(10000, false), code: CodeBadFrame},
}

// TestDecodeFrameRefused proves that every kind of bad client frame of
// protocol v1 is refused with its error code and a reason, and that the
// frame's ref and room come back when they could be read (and a ref that is
// itself invalid does not).
func TestDecodeFrameRefused(t *testing.T) {
	t.Parallel()
	cases := refusedFrames
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tc.input))
			if err == nil {
				t.Fatalf("DecodeFrame(%q) = %s, nil; want error %q", tc.input, frameString(f), tc.code)
			}
			if err.Code != tc.code {
				t.Errorf("code = %q (%s), want %q", err.Code, err.Reason, tc.code)
			}
			if strings.TrimSpace(err.Reason) == "" {
				t.Errorf("error %q has no reason", err.Code)
			}
			if f.Ref != tc.ref || f.Room != tc.room {
				t.Errorf("frame ref, room = %q, %q; want %q, %q", f.Ref, f.Room, tc.ref, tc.room)
			}
		})
	}
}

// trailingCloserFrames are objects followed by a stray closer.
var trailingCloserFrames = []string{
	`{"type":"leave","room":"lobby"}}`,
	`{"type":"leave","room":"lobby"}]`,
	`{"type":"leave","room":"lobby"} ]]]}`,
	`{"type":"leave","room":"lobby"}}{"type":"send","room":"lobby","text":"smuggled"}`,
}

// TestDecodeFrameRejectsTrailingCloser proves that a frame with a stray "}"
// or "]" after its object is refused like any other trailing data: protocol
// v1 allows exactly one JSON object per frame.
func TestDecodeFrameRejectsTrailingCloser(t *testing.T) {
	t.Parallel()
	for _, input := range trailingCloserFrames {
		f, err := DecodeFrame([]byte(input))
		if err == nil {
			t.Errorf("DecodeFrame(%q) accepted %s; want %s (json.Decoder.More reports false before '}' and ']', so it cannot be the trailing-data check)",
				input, frameString(f), CodeBadFrame)
			continue
		}
		if err.Code != CodeBadFrame {
			t.Errorf("DecodeFrame(%q) code = %q, want %q", input, err.Code, CodeBadFrame)
		}
	}
}

// wrongTypeFrames are frames with a field of the wrong JSON type, with the
// ref and room DecodeFrame must still return.
var wrongTypeFrames = []struct {
	name, input string
	ref, room   string
}{
	{"valid ref and room", `{"type":"send","room":"lobby","ref":"r1","text":5}`, "r1", "lobby"},
	{"fields after the bad one", `{"type":"send","text":5,"room":"lobby","ref":"r1"}`, "r1", "lobby"},
	{"invalid ref", `{"type":"send","room":"lobby","ref":"a\u0007","text":5}`, "", "lobby"},
	{"invalid room", `{"type":"send","room":"a b","ref":"r1","text":5}`, "r1", ""},
	{"ref of the wrong type", `{"type":"send","room":"lobby","ref":5}`, "", "lobby"},
}

// TestDecodeFrameWrongTypeKeepsRef proves DecodeFrame's documented promise
// that on error the ref and room are set when they could be read: a field of
// the wrong JSON type does not hide the other fields, so the client's error
// frame can still name its ref; a ref or room that is itself invalid is not
// echoed.
func TestDecodeFrameWrongTypeKeepsRef(t *testing.T) {
	t.Parallel()
	cases := wrongTypeFrames

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tc.input))
			if err == nil || err.Code != CodeBadFrame {
				t.Fatalf("DecodeFrame(%q) = %s, %v; want %s", tc.input, frameString(f), err, CodeBadFrame)
			}
			if f.Ref != tc.ref || f.Room != tc.room {
				t.Errorf("ref, room = %q, %q; want %q, %q, so the client can match the error to its send",
					f.Ref, f.Room, tc.ref, tc.room)
			}
		})
	}
}

// caseFrames are frames whose field names differ from the protocol's only
// in case.
var caseFrames = []struct {
	name, input string
	// code is the wanted error code, or "" when the frame is valid
	// and its room is room.
	code, room string
}{
	{"TYPE is not type", `{"TYPE":"join","room":"lobby"}`, CodeBadFrame, ""},
	{"Room is not room", `{"type":"join","Room":"lobby"}`, pipeline.CodeInvalid, ""},
	{"Room does not override room", `{"type":"leave","room":"lobby","Room":"elsewhere"}`, "", "lobby"},
}

// TestDecodeFrameFieldNamesAreCaseSensitive proves docs/PROTOCOL.md §2
// ("the server ignores fields it does not know"): "TYPE" or "Room" are not
// the protocol's "type" and "room", so they must neither make a frame valid
// nor override the real fields.
func TestDecodeFrameFieldNamesAreCaseSensitive(t *testing.T) {
	t.Parallel()
	cases := caseFrames

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tc.input))
			switch {
			case tc.code == "" && err != nil:
				t.Errorf("DecodeFrame(%q) error %s, want a valid frame of room %q", tc.input, err.Code, tc.room)
			case tc.code == "" && f.Room != tc.room:
				t.Errorf("DecodeFrame(%q) room = %q, want %q: encoding/json matches field names case-insensitively", tc.input, f.Room, tc.room)
			case tc.code != "" && (err == nil || err.Code != tc.code):
				t.Errorf("DecodeFrame(%q) = %s, %v; want %s: encoding/json matches field names case-insensitively", tc.input, frameString(f), err, tc.code)
			}
		})
	}
}

// acceptedFrames are valid frames with the fields they decode to.
var acceptedFrames = []struct {
	name  string
	input string
	want  ClientFrame
}{
	{"join", `{"type":"join","room":"lobby","history":10,"ref":"j1"}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", History: intPtr(10), Ref: "j1"}},
	{"join without history", `{"type":"join","room":"lobby"}`,
		ClientFrame{Type: TypeJoin, Room: "lobby"}},
	{"join with null history", `{"type":"join","room":"lobby","history":null}`,
		ClientFrame{Type: TypeJoin, Room: "lobby"}},
	{"join history 0", `{"type":"join","room":"lobby","history":0}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", History: intPtr(0)}},
	{"join history 500", `{"type":"join","room":"lobby","history":500}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", History: intPtr(MaxHistory)}},
	{"join since", `{"type":"join","room":"lobby","since":"123-4"}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", Since: "123-4"}},
	{"join since max seq", `{"type":"join","room":"lobby","since":"18446744073709551615-18446744073709551615"}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", Since: "18446744073709551615-18446744073709551615"}},
	{"room of 64 characters", `{"type":"join","room":"` + room64 + `"}`,
		ClientFrame{Type: TypeJoin, Room: room64}},
	{"room with every punctuation allowed", `{"type":"join","room":"a_b-c.d:E9"}`,
		ClientFrame{Type: TypeJoin, Room: "a_b-c.d:E9"}},
	{"leave", `{"type":"leave","room":"lobby","ref":"l"}`,
		ClientFrame{Type: TypeLeave, Room: "lobby", Ref: "l"}},
	{"send", `{"type":"send","room":"lobby","text":"héllo\nworld 🎉","ref":"c-1"}`,
		ClientFrame{Type: TypeSend, Room: "lobby", Text: "héllo\nworld 🎉", Ref: "c-1"}},
	{"send with empty text (checked by the pipeline)", `{"type":"send","room":"lobby","text":""}`,
		ClientFrame{Type: TypeSend, Room: "lobby"}},
	{"send with ref of 64 characters", `{"type":"send","room":"lobby","text":"x","ref":"` + strings.Repeat("é", pipeline.MaxRefLen) + `"}`,
		ClientFrame{Type: TypeSend, Room: "lobby", Text: "x", Ref: strings.Repeat("é", pipeline.MaxRefLen)}},
	{"send with escaped text", `{"type":"send","room":"lobby","text":"\u00e9\"\\"}`,
		ClientFrame{Type: TypeSend, Room: "lobby", Text: "é\"\\"}},
	{"history", `{"type":"history","room":"lobby","before":"123-4","limit":20,"ref":"h"}`,
		ClientFrame{Type: TypeHistory, Room: "lobby", Before: "123-4", Limit: 20, Ref: "h"}},
	{"history without before or limit", `{"type":"history","room":"lobby"}`,
		ClientFrame{Type: TypeHistory, Room: "lobby"}},
	{"history limit 500", `{"type":"history","room":"lobby","limit":500}`,
		ClientFrame{Type: TypeHistory, Room: "lobby", Limit: MaxHistory}},
	{"surrounding whitespace", " \n{\"type\":\"leave\",\"room\":\"lobby\"}\n ",
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	{"unknown fields are ignored", `{"type":"leave","room":"lobby","extra":{"a":[1,2]}}`,
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	// Corners where encoding/json, which first defined the protocol's
	// decoding, sets the behaviour.
	{"repeated name: the last value counts", `{"type":"send","type":"leave","room":"lobby"}`,
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	{"repeated name: a later value replaces one of the wrong type", `{"type":"leave","room":5,"room":"lobby"}`,
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	{"repeated history: a later null clears it", `{"type":"join","room":"lobby","history":5,"history":null}`,
		ClientFrame{Type: TypeJoin, Room: "lobby"}},
	{"repeated text: a later null empties it", `{"type":"send","room":"lobby","text":"a","text":null}`,
		ClientFrame{Type: TypeSend, Room: "lobby"}},
	{"null string fields are empty", `{"type":"join","room":"lobby","ref":null,"since":null,"epoch":null,"limit":null}`,
		ClientFrame{Type: TypeJoin, Room: "lobby"}},
	{"escaped field names", `{"\u0074ype":"leave","ro\u006fm":"lobby"}`,
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	{"escaped surrogates: a pair and lone halves", `{"type":"send","room":"lobby","text":"\ud83c\udf89\ud800x\udc00\u0000"}`,
		ClientFrame{Type: TypeSend, Room: "lobby", Text: "🎉\uFFFDx\uFFFD\x00"}},
	{"history -0", `{"type":"join","room":"lobby","history":-0}`,
		ClientFrame{Type: TypeJoin, Room: "lobby", History: intPtr(0)}},
	{"trailing Unicode spaces", "{\"type\":\"leave\",\"room\":\"lobby\"}\u00a0\u2028\v",
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
	{"unknown field nested to the depth limit", nestedFrame(9999, false),
		ClientFrame{Type: TypeLeave, Room: "lobby"}},
}

// TestDecodeFrameAccepted proves that valid frames of each type decode with
// exactly the expected fields, including the boundaries of every limit.
func TestDecodeFrameAccepted(t *testing.T) {
	t.Parallel()
	cases := acceptedFrames

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeFrame([]byte(tc.input))
			if err != nil {
				t.Fatalf("DecodeFrame(%q) error %s: %s", tc.input, err.Code, err.Reason)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("DecodeFrame(%q) = %s, want %s", tc.input, frameString(got), frameString(tc.want))
			}
		})
	}
}

// TestDecodeFrameTypeErrorNamesField proves that a known field of the wrong
// JSON type is refused with a reason that names the field, and that a huge
// number is not quoted whole.
func TestDecodeFrameTypeErrorNamesField(t *testing.T) {
	t.Parallel()
	fields := []string{"type", "room", "history", "since", "epoch", "before", "after", "limit", "text", "ref", "token"}
	for _, name := range fields {
		for _, value := range []string{`[]`, `{"a":1}`, `true`, `1.5`, `"5"`} {
			input := `{"type":"join","room":"lobby",` + strconv.Quote(name) + `:` + value + `}`
			integer := name == "history" || name == "limit"
			if value == `"5"` && !integer {
				continue // a string is a valid string
			}
			_, err := DecodeFrame([]byte(input))
			if err == nil || err.Code != CodeBadFrame {
				t.Errorf("DecodeFrame(%s) = %v, want %s", input, err, CodeBadFrame)
				continue
			}
			if !strings.Contains(err.Reason, "field "+name+":") {
				t.Errorf("DecodeFrame(%s) reason %q does not name field %s", input, err.Reason, name)
			}
		}
	}
	huge := `{"type":"join","room":"lobby","history":1` + strings.Repeat("0", 60<<10) + `}`
	_, err := DecodeFrame([]byte(huge))
	if err == nil || !strings.Contains(err.Reason, "field history:") || len(err.Reason) > MaxReasonBytes {
		t.Errorf("DecodeFrame(60 KB history) = %v, want a reason naming history within %d bytes", err, MaxReasonBytes)
	}
}

// TestDecodeFrameValuesOutliveTheNextFrame proves that a decoded frame owns
// its strings: neither reusing the input buffer (as the socket reader does)
// nor decoding the next frame, whose escapes go through the same pooled
// buffers, changes it.
func TestDecodeFrameValuesOutliveTheNextFrame(t *testing.T) {
	t.Parallel()
	first := []byte(`{"type":"send","room":"lobby","text":"caf\u00e9 one","ref":"r-\u0031"}`)
	second := []byte(`{"type":"send","room":"other","text":"na\u00efve two","ref":"r-\u0032"}`)
	want := ClientFrame{Type: TypeSend, Room: "lobby", Text: "café one", Ref: "r-1"}
	for range 3 {
		got, err := DecodeFrame(first)
		if err != nil {
			t.Fatalf("DecodeFrame(%s): %s: %s", first, err.Code, err.Reason)
		}
		buf := bytes.Clone(first)
		got2, err := DecodeFrame(buf)
		if err != nil {
			t.Fatalf("DecodeFrame(%s): %s: %s", buf, err.Code, err.Reason)
		}
		for i := range buf {
			buf[i] = 'x'
		}
		if _, err := DecodeFrame(second); err != nil {
			t.Fatalf("DecodeFrame(%s): %s: %s", second, err.Code, err.Reason)
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got2, want) {
			t.Fatalf("after decoding another frame and overwriting the input: got %s and %s, want %s",
				frameString(got), frameString(got2), frameString(want))
		}
	}
}

// fuzzSeeds are the in-code seeds of FuzzDecodeFrame beside every frame of
// the tables above; the files under testdata/fuzz/FuzzDecodeFrame add more.
// Most are the corners where a decoder other than encoding/json could
// differ from it.
var fuzzSeeds = []string{
	`{"type":"join","room":"lobby","history":10,"ref":"j1"}`,
	`{"type":"join","room":"lobby","since":"123-4"}`,
	`{"type":"leave","room":"lobby"}`,
	`{"type":"send","room":"lobby","text":"hi","ref":"c-1"}`,
	`{"type":"history","room":"lobby","before":"5-0","limit":500}`,
	`{"type":"leave","room":"lobby"}}`,
	`{"type":"send","room":"lobby","text":5}`,
	`{"type":"send","room":"lobby","ref":"\ud800"}`,
	`null`,
	"{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"\xff\"}",

	// Escapes, in values and in names.
	`{"type":"send","room":"lobby","text":"\u0000\ud83c\udf89\ud800\udc00x\udc00\ud800\u0041\"\\\/\b\f\n\r\t"}`,
	`{"type":"send","room":"lobby","text":"\ud800\ud800\udc00\udbff\udfff\ud83c"}`,
	`{"type":"send","room":"lobby","text":"a\ud800","ref":"\uDBFF\uDFFF"}`,
	`{"\u0074ype":"leave","ro\u006fm":"lobby"}`,
	`{"type\ud800":"join","room":"lobby"}`,
	`{"type":"\u006aoin","room":"lobby"}`,
	`{"type":"send","room":"lobby","text":"\x","ref":"r"}`,
	`{"type":"send","room":"lobby","text":"\u12","ref":"r"}`,
	`{"type":"send","room":"lobby","text":"\U0041"}`,
	"{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"a\x01b\"}",
	"{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"a\x7fb\"}",

	// Unknown fields of every kind and depth.
	`{"type":"leave","room":"lobby","x":{"a":[{"b":[[[]]]},null,true,false,1.5e-3,"s",{}]},"y":-0.0E+1}`,
	`{"type":"leave","x":{"room":"elsewhere","type":"join"},"room":"lobby"}`,
	`{"type":"leave","room":"lobby","":1,"Type":"join","ROOM":"x"}`,

	// Numbers.
	`{"type":"join","room":"lobby","history":-0}`,
	`{"type":"join","room":"lobby","history":1.0}`,
	`{"type":"join","room":"lobby","history":1e2}`,
	`{"type":"join","room":"lobby","history":1E400}`,
	`{"type":"join","room":"lobby","history":9223372036854775807}`,
	`{"type":"join","room":"lobby","history":9223372036854775808}`,
	`{"type":"join","room":"lobby","history":-9223372036854775808}`,
	`{"type":"join","room":"lobby","history":-9223372036854775809}`,
	`{"type":"join","room":"lobby","history":00}`,
	`{"type":"join","room":"lobby","history":+1}`,
	`{"type":"join","room":"lobby","history":.5}`,
	`{"type":"join","room":"lobby","history":1.}`,
	`{"type":"join","room":"lobby","history":-}`,
	`{"type":"join","room":"lobby","history":true}`,
	`{"type":"history","room":"lobby","limit":1.5}`,
	`{"type":"history","room":"lobby","limit":1e400}`,
	`{"type":"history","room":"lobby","limit":500.0}`,
	`{"type":"history","room":"lobby","limit":[]}`,
	`{"type":"history","room":"lobby","limit":NaN}`,

	// Repeated names: the last value counts.
	`{"type":"send","type":"join","room":"lobby"}`,
	`{"type":"join","room":"lobby","history":5,"history":null}`,
	`{"type":"join","room":"lobby","history":null,"history":7}`,
	`{"type":"send","room":"lobby","text":5,"text":"ok"}`,
	`{"type":"send","room":"lobby","text":"ok","text":5}`,
	`{"type":"send","room":"lobby","text":"a","text":null}`,
	`{"type":"history","room":"lobby","limit":5,"limit":null}`,
	`{"type":"history","room":"lobby","limit":"5","limit":5}`,

	// Null fields.
	`{"type":"join","room":"lobby","ref":null,"since":null,"epoch":null,"limit":null,"token":null}`,
	`{"type":null,"room":"lobby"}`,
	`{"type":"join","room":null}`,

	// Whitespace, inside and around; a byte-order mark.
	"\t\r\n {\"type\" : \"leave\" ,\n\"room\"\t:\r\"lobby\" } \r\n\t",
	"{\"type\":\"leave\",\"room\":\"lobby\"}\u00a0",
	"{\"type\":\"leave\",\"room\":\"lobby\"}\u0085\u2028\u3000",
	"{\"type\":\"leave\",\"room\":\"lobby\"}\v\f",
	"\v{\"type\":\"leave\",\"room\":\"lobby\"}",
	"\u00a0{\"type\":\"leave\",\"room\":\"lobby\"}",
	"{\"type\":\"leave\",\u00a0\"room\":\"lobby\"}",
	"\ufeff{\"type\":\"leave\",\"room\":\"lobby\"}",
	"{\"type\":\"leave\",\"room\":\"lobby\"}\ufeff",

	// Not one object, or more than one.
	`{"type":"leave","room":"lobby"}x`,
	`{"type":"leave","room":"lobby"},`,
	`{"type":"leave","room":"lobby"}"`,
	`{"type":"leave","room":"lobby"}/* comment */`,
	`{"type":"leave","room":"lobby"}{}`,
	`{"type":"leave","room":"lobby",}`,
	`{"type":"leave" "room":"lobby"}`,
	`{,"type":"leave","room":"lobby"}`,
	`{"type":"leave","room"}`,
	`{"type":"leave","room":}`,
	`{"type":"leave","room":"lobby","x":tru}`,
	`{"type":"leave","room":"lobby","x":[1,]}`,
	`{"type":"leave","room":"lobby","x":{"a"}}`,
	`{5:"leave"}`,
	`null `,
	`nul`,
	`[] x`,
	`{}`,
	`{"a":1}`,
	`"{}"`,
	`  `,
}

// maxSeedBytes bounds the seeds of FuzzDecodeFrame: mutating the 20 KB
// frames of the depth limit slows the fuzzer down to a crawl.
const maxSeedBytes = 4 << 10

// nestedFrame returns a leave frame with an unknown field of depth arrays
// or objects nested in one another, so that the whole frame nests depth+1
// deep.
func nestedFrame(depth int, objects bool) string {
	open, close := "[", "]"
	if objects {
		open, close = `{"a":`, "}"
	}
	inner := "1"
	if !objects {
		inner = ""
	}
	return `{"type":"leave","room":"lobby","x":` + strings.Repeat(open, depth) + inner + strings.Repeat(close, depth) + `}`
}

// allFrames returns every frame of this file's tables and fuzzSeeds.
func allFrames() []string {
	var all []string
	for _, tc := range refusedFrames {
		all = append(all, tc.input)
	}
	all = append(all, trailingCloserFrames...)
	for _, tc := range wrongTypeFrames {
		all = append(all, tc.input)
	}
	for _, tc := range caseFrames {
		all = append(all, tc.input)
	}
	for _, tc := range acceptedFrames {
		all = append(all, tc.input)
	}
	return append(all, fuzzSeeds...)
}

// TestDecodeFrameNestingMatchesReference proves that DecodeFrame refuses
// exactly the frames nested beyond encoding/json's depth limit (10000, the
// frame included). These frames are too big to seed FuzzDecodeFrame with.
func TestDecodeFrameNestingMatchesReference(t *testing.T) {
	t.Parallel()
	for _, depth := range []int{9998, 9999, 10000, 10001} {
		for _, objects := range []bool{false, true} {
			data := []byte(nestedFrame(depth, objects))
			fr, err := DecodeFrame(data)
			sameAsReference(t, data, fr, err)
		}
	}
}

// sameAsReference fails t unless DecodeFrame's frame and error code for
// data, fr and err, are those of referenceDecodeFrame.
func sameAsReference(t *testing.T, data []byte, fr ClientFrame, err *pipeline.Error) {
	t.Helper()
	want, werr := referenceDecodeFrame(data)
	switch {
	case err == nil && werr != nil:
		t.Fatalf("DecodeFrame(%q) = %s, nil; the reference refuses it: %s: %s", data, frameString(fr), werr.Code, werr.Reason)
	case err != nil && werr == nil:
		t.Fatalf("DecodeFrame(%q) refused it: %s: %s; the reference accepts %s", data, err.Code, err.Reason, frameString(want))
	case err != nil && err.Code != werr.Code:
		t.Fatalf("DecodeFrame(%q) code %s (%s), the reference's %s (%s)", data, err.Code, err.Reason, werr.Code, werr.Reason)
	}
	if !reflect.DeepEqual(fr, want) {
		t.Fatalf("DecodeFrame(%q) = %s (%#v), the reference's %s (%#v)", data, frameString(fr), fr, frameString(want), want)
	}
}

// FuzzDecodeFrame proves, for any input, that DecodeFrame returns the frame
// and error code of referenceDecodeFrame (encoding/json) and does not change
// its input; that an error carries a protocol code, a reason and never
// echoes an invalid ref; and that an accepted frame has a known type, a
// valid room and ref, and survives a round trip through encoding/json
// unchanged.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range allFrames() {
		if len(s) <= maxSeedBytes {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		fr, err := DecodeFrame(data)
		if !bytes.Equal(data, orig) {
			t.Fatalf("DecodeFrame(%q) changed its input to %q", orig, data)
		}
		sameAsReference(t, data, fr, err)
		if err != nil {
			if err.Code != CodeBadFrame && err.Code != pipeline.CodeInvalid {
				t.Fatalf("DecodeFrame(%q) code %q, want %s or %s", data, err.Code, CodeBadFrame, pipeline.CodeInvalid)
			}
			if err.Reason == "" {
				t.Fatalf("DecodeFrame(%q) error %s without reason", data, err.Code)
			}
			if verr := pipeline.ValidateRef(fr.Ref); verr != nil {
				t.Fatalf("DecodeFrame(%q) refused with ref %q, which is itself invalid: %v", data, fr.Ref, verr)
			}
			return
		}
		switch fr.Type {
		case TypeJoin, TypeLeave, TypeSend, TypeHistory, TypeAuth:
		default:
			t.Fatalf("DecodeFrame(%q) accepted type %q", data, fr.Type)
		}
		if fr.Type != TypeAuth {
			if verr := pipeline.ValidateRoom(fr.Room); verr != nil {
				t.Fatalf("DecodeFrame(%q) accepted room %q: %v", data, fr.Room, verr)
			}
		}
		if verr := pipeline.ValidateRef(fr.Ref); verr != nil {
			t.Fatalf("DecodeFrame(%q) accepted ref %q: %v", data, fr.Ref, verr)
		}
		enc, merr := json.Marshal(fr)
		if merr != nil {
			t.Fatalf("re-encoding %#v: %v", fr, merr)
		}
		again, err := DecodeFrame(enc)
		if err != nil {
			t.Fatalf("DecodeFrame(%q) accepted, but its re-encoding %s is refused: %s: %s", data, enc, err.Code, err.Reason)
		}
		if !reflect.DeepEqual(again, fr) {
			t.Fatalf("round trip of %q: got %s, want %s", data, frameString(again), frameString(fr))
		}
	})
}

// BenchmarkDecodeFrame measures decoding the two commonest client frames, a
// send with 100 bytes of text and a join, by DecodeFrame and by
// referenceDecodeFrame (the encoding/json decoder it replaced).
func BenchmarkDecodeFrame(b *testing.B) {
	text := strings.Repeat("chat ", 20)
	frames := []struct {
		name string
		data string
	}{
		{"send", `{"type":"send","room":"lobby","text":"` + text + `","ref":"c-12345"}`},
		{"join", `{"type":"join","room":"lobby","history":50,"since":"1732900000000-0","ref":"j-1"}`},
	}
	decoders := []struct {
		name   string
		decode func([]byte) (ClientFrame, *pipeline.Error)
	}{
		{"jsontext", DecodeFrame},
		{"reference", referenceDecodeFrame},
	}
	for _, fr := range frames {
		for _, d := range decoders {
			b.Run(fr.name+"/"+d.name, func(b *testing.B) {
				data := []byte(fr.data)
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := d.decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// encodeSeeds are strings whose JSON encoding has every kind of escape:
// quotes, backslashes, each control character, DEL, HTML characters (not
// escaped), U+2028 and U+2029, invalid UTF-8, multi-byte characters.
var encodeSeeds = []string{
	"",
	"lobby",
	"1732900000000-0",
	`say "hi" \ back/slash`,
	"\x00\x01\b\t\n\v\f\r\x1b\x1f \x7f",
	"<script>&amp;</script>",
	"line\u2028para\u2029end\u2027\u202a",
	"bad \xff\xfe utf8 \xc3 cut \xed\xa0\x80 surrogate",
	"héllo wörld 🎉 комната",
	strings.Repeat("long ", 200),
}

// FuzzEncodeFrames proves that appendAck, appendMessage and appendError,
// which encode ack, message and error frames without encoding/json, write
// for any field values the same bytes as encoding/json (referenceEncode),
// and that encode and errFrame use them.
func FuzzEncodeFrames(f *testing.F) {
	for i, s := range encodeSeeds {
		t := encodeSeeds[(i+1)%len(encodeSeeds)]
		f.Add(s, t, s, t, s, int64(i*1000))
		f.Add(t, s, "", "", "", int64(0))
	}
	f.Fuzz(func(t *testing.T, a, b, c, d, e string, n int64) {
		ack := ackFrame{Type: TypeAck, Ref: a, Room: b, ID: c, Seq: d, Epoch: e}
		if got, want := encode(ack), referenceEncode(ack); !bytes.Equal(got, want) {
			t.Fatalf("encode(%#v) = %s, encoding/json writes %s", ack, got, want)
		}
		for _, m := range []wireMessage{
			{Type: TypeMessage, Room: a, ID: b, Seq: c, User: d, Text: e, TS: a, Ref: b, Epoch: c},
			{Type: TypeMessage, Room: e, ID: d, Seq: c, User: b, Text: a, TS: e},
		} {
			if got, want := encode(m), referenceEncode(m); !bytes.Equal(got, want) {
				t.Fatalf("encode(%#v) = %s, encoding/json writes %s", m, got, want)
			}
		}
		ef := errorFrame{Type: TypeError, Code: a, Message: b, Ref: c, Room: d, RetryAfterMS: n, Moderator: e}
		if got, want := appendError(nil, ef), referenceEncode(ef); !bytes.Equal(got, want) {
			t.Fatalf("appendError(%#v) = %s, encoding/json writes %s", ef, got, want)
		}
		pe := &pipeline.Error{Code: a, Reason: b, Moderator: e, RetryAfter: time.Duration(n) * time.Millisecond}
		want := referenceEncode(errorFrame{
			Type: TypeError, Code: a, Message: clip(b, MaxReasonBytes), Ref: clip(c, MaxQuoteBytes), Room: clip(d, MaxQuoteBytes),
			RetryAfterMS: pe.RetryAfter.Milliseconds(), Moderator: clip(e, MaxQuoteBytes),
		})
		if got := errFrame(pe, c, d); !bytes.Equal(got, want) {
			t.Fatalf("errFrame(%#v, %q, %q) = %s, encoding/json writes %s", pe, c, d, got, want)
		}
	})
}

// BenchmarkEncodeAck measures encoding the ack of a send, one per message,
// by encode (appendAck) and by referenceEncode (encoding/json).
func BenchmarkEncodeAck(b *testing.B) {
	ack := ackFrame{Type: TypeAck, Ref: "c-12345", Room: "lobby", ID: "0193e2b4-7c1a-7d2e-9f3a-5b6c7d8e9f01", Seq: "1732900000000-17", Epoch: "e1732800000000"}
	b.Run("appendAck", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = encode(ack)
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = referenceEncode(ack)
		}
	})
}

// BenchmarkEncodeMessage measures encoding a message frame, once per
// message delivered (and per message of a history page), by encode
// (appendMessage) and by referenceEncode (encoding/json).
func BenchmarkEncodeMessage(b *testing.B) {
	m := wireMessage{
		Type: TypeMessage, Room: "lobby", ID: "0193e2b4-7c1a-7d2e-9f3a-5b6c7d8e9f01", Seq: "1732900000000-17", User: "alice",
		Text: "hello, everyone: a message of typical length", TS: "2026-11-29T21:00:00.123Z", Ref: "c-12345", Epoch: "e1732800000000",
	}
	b.Run("appendMessage", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = encode(m)
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = referenceEncode(m)
		}
	})
}

// BenchmarkErrFrame measures encoding a refusal, the answer to every send an
// overloaded server sheds, by errFrame (appendError) and by encoding/json.
func BenchmarkErrFrame(b *testing.B) {
	e := &pipeline.Error{Code: pipeline.CodeUnavailable, Reason: "the server is busy; retry with the same ref", RetryAfter: 250 * time.Millisecond}
	b.Run("appendError", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = errFrame(e, "c-12345", "lobby")
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = referenceEncode(errorFrame{
				Type: TypeError, Code: e.Code, Message: clip(e.Reason, MaxReasonBytes), Ref: "c-12345", Room: "lobby",
				RetryAfterMS: e.RetryAfter.Milliseconds(),
			})
		}
	})
}

// DecodeFrame keeps nothing of the bytes it decodes, so the reader can
// reuse a frame's buffer once it is handled: overwriting them leaves the
// decoded frame as it was, for plain and escaped strings and for the ref
// and room salvaged from a frame that does not decode.
func TestDecodeFrameCopiesStrings(t *testing.T) {
	for _, raw := range []string{
		`{"type":"send","room":"lobby","text":"hello there","ref":"r-1"}`,
		`{"type":"send","room":"lob\u0062y","text":"tab\there","ref":"r\u002d1"}`,
		`{"type":"join","room":"lobby","since":"17-2","epoch":"e1","history":5}`,
		`{"type":"history","room":"lobby","before":"9-0","after":"3-0","limit":10}`,
		`{"type":"auth","token":"abc.def.ghi"}`,
		`{"type":"send","room":"lobby","text":7,"ref":"r-2"}`,
	} {
		data := []byte(raw)
		f, perr := DecodeFrame(data)
		before := fmt.Sprintf("%+v %v", f, perr)
		for i := range data {
			data[i] = 'X'
		}
		if after := fmt.Sprintf("%+v %v", f, perr); after != before {
			t.Fatalf("%s: decoded %s, after overwriting the bytes %s", raw, before, after)
		}
		if f.Room == "" && f.Token == "" {
			t.Fatalf("%s: nothing decoded: %s", raw, before)
		}
	}
}
