package ws

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// The known fields of a client frame, by index into decodeFields' state.
const (
	fieldType = iota
	fieldRoom
	fieldHistory
	fieldSince
	fieldEpoch
	fieldBefore
	fieldAfter
	fieldLimit
	fieldText
	fieldRef
	fieldToken
	numFields
)

// fieldNames are the JSON names of the known fields, matched exactly.
var fieldNames = [numFields]string{
	fieldType: "type", fieldRoom: "room", fieldHistory: "history", fieldSince: "since",
	fieldEpoch: "epoch", fieldBefore: "before", fieldAfter: "after", fieldLimit: "limit",
	fieldText: "text", fieldRef: "ref", fieldToken: "token",
}

// fieldIndex returns the index of the known field named name (its unquoted
// bytes), or -1.
func fieldIndex(name []byte) int {
	switch string(name) {
	case "type":
		return fieldType
	case "room":
		return fieldRoom
	case "history":
		return fieldHistory
	case "since":
		return fieldSince
	case "epoch":
		return fieldEpoch
	case "before":
		return fieldBefore
	case "after":
		return fieldAfter
	case "limit":
		return fieldLimit
	case "text":
		return fieldText
	case "ref":
		return fieldRef
	case "token":
		return fieldToken
	}
	return -1
}

// maxScratchBytes is the largest unquoting buffer a pooled frameDecoder
// keeps; a frame with a longer escaped string allocates its own, so the pool
// never pins a frame-sized buffer per processor.
const maxScratchBytes = 4 << 10

// frameDecoder is the reusable state of decodeFields: a jsontext.Decoder
// reading the frame in place and a buffer for unquoting escaped strings.
// One frameDecoder serves one decodeFields call at a time (frameDecoders
// hands it out).
type frameDecoder struct {
	src     bytes.Buffer
	dec     jsontext.Decoder
	scratch []byte
}

// frameDecoders pools frameDecoders across connections.
var frameDecoders = sync.Pool{New: func() any { return new(frameDecoder) }}

// frameDecodeOptions configure the tokenizer like encoding/json, which the
// protocol was first defined by: a repeated name is allowed (its last value
// counts, as before), and an escaped lone surrogate becomes U+FFFD. Raw
// invalid UTF-8 never gets here: DecodeFrame refuses it first.
var frameDecodeOptions = []jsontext.Options{
	jsontext.AllowDuplicateNames(true),
	jsontext.AllowInvalidUTF8(true),
}

// decodeFields decodes one JSON object into f. Field names are matched
// exactly ("TYPE" is not "type"); unknown fields, whatever their value, are
// skipped so that clients may send newer fields; when a name repeats, its
// last value counts. Only whitespace may follow the object. A known field
// whose value has the wrong JSON type is a *typeError.
func decodeFields(data []byte, f *ClientFrame) error {
	fd := frameDecoders.Get().(*frameDecoder)
	defer frameDecoders.Put(fd)
	// The decoder reads a bytes.Buffer in place, without copying it.
	fd.src = *bytes.NewBuffer(data)
	fd.dec.Reset(&fd.src, frameDecodeOptions...)
	err := fd.decode(data, f)
	// Drop the frame so that the pool does not keep it alive.
	fd.src = bytes.Buffer{}
	fd.dec.Reset(&fd.src)
	if cap(fd.scratch) > maxScratchBytes {
		fd.scratch = nil
	}
	return err
}

func (fd *frameDecoder) decode(data []byte, f *ClientFrame) error {
	dec := &fd.dec
	if dec.PeekKind() != '{' {
		v, err := dec.ReadValue()
		switch {
		case err != nil:
			return syntaxError(err)
		case v.Kind() == 'n':
			return errors.New("frame is null")
		default:
			return fmt.Errorf("frame is a JSON %s, not an object", kindName(v.Kind()))
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return syntaxError(err)
	}
	// bad holds, per field, the type error of its last value, if any: a
	// later value of the same name replaces an earlier one, error or not.
	var bad [numFields]*typeError
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return syntaxError(err)
		}
		i := fieldIndex(fd.unquote(name))
		if i < 0 {
			if err := dec.SkipValue(); err != nil {
				return syntaxError(err)
			}
			continue
		}
		v, err := dec.ReadValue()
		if err != nil {
			return syntaxError(err)
		}
		bad[i] = fd.set(f, i, v)
	}
	if _, err := dec.ReadToken(); err != nil {
		return syntaxError(err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return errors.New("one JSON object per frame")
	}
	for _, e := range bad {
		if e != nil {
			return e
		}
	}
	return nil
}

// set stores the value v of known field i in f, as encoding/json would
// decode it onto a zero field: null leaves the zero value.
func (fd *frameDecoder) set(f *ClientFrame, i int, v jsontext.Value) *typeError {
	switch i {
	case fieldHistory, fieldLimit:
		var n int
		switch k := v.Kind(); k {
		case 'n':
		case '0':
			var ok bool
			if n, ok = parseInt(v); !ok {
				return &typeError{field: fieldNames[i], value: "number " + string(v), want: "integer"}
			}
		default:
			return &typeError{field: fieldNames[i], value: kindName(k), want: "integer"}
		}
		if i == fieldLimit {
			f.Limit = n
		} else if v.Kind() == 'n' {
			f.History = nil
		} else {
			f.History = &n
		}
		return nil
	}
	var s string
	switch k := v.Kind(); k {
	case 'n':
	case '"':
		raw := fd.unquote(v)
		if i == fieldType {
			s = frameType(raw)
		} else {
			s = string(raw)
		}
	default:
		return &typeError{field: fieldNames[i], value: kindName(k), want: "string"}
	}
	switch i {
	case fieldType:
		f.Type = s
	case fieldRoom:
		f.Room = s
	case fieldSince:
		f.Since = s
	case fieldEpoch:
		f.Epoch = s
	case fieldBefore:
		f.Before = s
	case fieldAfter:
		f.After = s
	case fieldText:
		f.Text = s
	case fieldRef:
		f.Ref = s
	case fieldToken:
		f.Token = s
	}
	return nil
}

// unquote returns the contents of the JSON string q, which the decoder has
// checked. Without escapes that is q itself, less its quotes; otherwise the
// decoded contents, valid until the next call.
func (fd *frameDecoder) unquote(q jsontext.Value) []byte {
	if bytes.IndexByte(q, '\\') < 0 {
		return q[1 : len(q)-1]
	}
	// The only error left for a checked string is an escaped lone
	// surrogate, which AppendUnquote turns into U+FFFD as encoding/json does.
	fd.scratch, _ = jsontext.AppendUnquote(fd.scratch[:0], q)
	return fd.scratch
}

// frameType returns the frame type named s, sharing the constant's memory
// for the protocol's types.
func frameType(s []byte) string {
	switch string(s) {
	case TypeSend:
		return TypeSend
	case TypeJoin:
		return TypeJoin
	case TypeLeave:
		return TypeLeave
	case TypeHistory:
		return TypeHistory
	case TypeAuth:
		return TypeAuth
	}
	return string(s)
}

// parseInt parses a JSON number that the decoder has checked as an int, as
// encoding/json does: an integer literal within the range of int; a
// fraction or exponent, even 1.0 or 1e2, is not an int.
func parseInt(num []byte) (int, bool) {
	neg := num[0] == '-'
	if neg {
		num = num[1:]
	}
	// limit is the magnitude of the most negative int; the most positive
	// is one less.
	const limit = uint64(1) << (strconv.IntSize - 1)
	var n uint64
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		return int(-n), true
	}
	if n == limit {
		return 0, false
	}
	return int(n), true
}

// kindName names a JSON kind as encoding/json's type errors do.
func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "bool"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "null"
}

// typeError is a known field whose JSON value has the wrong type.
type typeError struct {
	field string
	// value is the JSON kind of the value, and the literal of a number
	// that is not an integer ("number 1.5").
	value string
	// want is the type the field needs: "string" or "integer".
	want string
}

// Error quotes at most MaxQuoteBytes of the value, which may be a 60 KB
// number.
func (e *typeError) Error() string {
	article := "a"
	if e.want == "integer" {
		article = "an"
	}
	return fmt.Sprintf("field %s: %s is not %s %s", e.field, clip(e.value, MaxQuoteBytes), article, e.want)
}

// syntaxError explains a tokenizer error without the tokenizer's prefix and
// without quoting the frame's field names.
func syntaxError(err error) error {
	switch {
	case err == io.EOF:
		return errors.New("frame is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("frame ends inside its JSON value")
	}
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && se.Err != nil {
		return fmt.Errorf("%w (at byte %d)", se.Err, se.ByteOffset)
	}
	return err
}
