package redisstore

import (
	"errors"
	"testing"

	"github.com/chatstream/chatstream/pipeline"
)

// TestAppendedReply: each kind of reply entry of the append script is read
// as the script's header describes, and anything else is a bad reply,
// never a stored message.
func TestAppendedReply(t *testing.T) {
	r := &appendReq{uuid: "u-1"}
	cases := []struct {
		name         string
		epoch, reply any
		want         pipeline.Appended
		wantErr      error
	}{
		{"stored", "e1", "1700000000000-0", pipeline.Appended{ID: "u-1", Seq: "1700000000000-0", Epoch: "e1"}, nil},
		{"duplicate", "e1", "=1700000000000-4 u-0 with space", pipeline.Appended{ID: "u-0 with space", Seq: "1700000000000-4", Epoch: "e1", Duplicate: true}, nil},
		{"failed", "", "!WRONGTYPE Operation against a key", pipeline.Appended{}, errScript},
		{"empty", "e1", "", pipeline.Appended{}, errBadReply},
		{"no epoch", "", "1700000000000-0", pipeline.Appended{}, errBadReply},
		{"duplicate without UUID", "e1", "=1700000000000-4", pipeline.Appended{}, errBadReply},
		{"duplicate without seq", "e1", "= u-0", pipeline.Appended{}, errBadReply},
		{"not a string", "e1", int64(1), pipeline.Appended{}, errBadReply},
		{"epoch not a string", []any{"e1"}, "1700000000000-0", pipeline.Appended{}, errBadReply},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appended(r, tc.epoch, tc.reply)
			if got != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("appended(%v, %v) = %+v, %v; want %+v, %v", tc.epoch, tc.reply, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
