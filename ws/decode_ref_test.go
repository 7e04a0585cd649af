package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/chatstream/chatstream/pipeline"
)

// referenceDecodeFrame is DecodeFrame as it was before decodeFields: the
// same checks, with frames decoded by encoding/json through referenceFields.
// FuzzDecodeFrame holds DecodeFrame to it, and BenchmarkDecodeFrame measures
// it beside DecodeFrame.
func referenceDecodeFrame(data []byte) (ClientFrame, *pipeline.Error) {
	var f ClientFrame
	if !utf8.Valid(data) {
		return f, pipeline.Errorf(pipeline.CodeInvalid, "frame is not valid UTF-8")
	}
	if err := referenceFields(data, &f); err != nil {
		return salvage(data), pipeline.Errorf(CodeBadFrame, "frame is not a JSON object of the protocol: %s", describeJSONError(err))
	}
	return checkFrame(f)
}

// referenceFields decodes one JSON object into f with field names matched
// exactly (encoding/json alone would accept "TYPE" for "type"); unknown
// fields are ignored. It decodes into a map of raw values, then each known
// field with encoding/json.
func referenceFields(data []byte, f *ClientFrame) error {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&fields); err != nil {
		return err
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return errors.New("one JSON object per frame")
	}
	if fields == nil {
		return errors.New("frame is null")
	}
	targets := map[string]any{
		"type": &f.Type, "room": &f.Room, "history": &f.History, "since": &f.Since, "epoch": &f.Epoch,
		"before": &f.Before, "after": &f.After, "limit": &f.Limit, "text": &f.Text, "ref": &f.Ref,
		"token": &f.Token,
	}
	for name, raw := range fields {
		target, known := targets[name]
		if !known {
			continue
		}
		if err := json.Unmarshal(raw, target); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return fmt.Errorf("field %s: %s is not a %s", name, clip(te.Value, MaxQuoteBytes), te.Type)
			}
			return fmt.Errorf("field %s: %s", name, clip(err.Error(), 2*MaxQuoteBytes))
		}
	}
	return nil
}

// referenceEncode is encode as it was before appendAck and appendError:
// encoding/json for every frame. FuzzEncodeFrames holds those two to it.
func referenceEncode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("ws: encoding a server frame: " + err.Error())
	}
	b := buf.Bytes()
	return append([]byte(nil), b[:len(b)-1]...)
}
