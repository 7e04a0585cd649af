package replay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// wait bounds every expected event.
const wait = 5 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newBackend returns a Redis backend with a key prefix of its own, closed
// when the test ends.
func newBackend(t *testing.T, srv *testredis.Server, suffix string) *redisstore.Backend {
	t.Helper()
	b, err := redisstore.New(redisstore.Config{URL: srv.URL, Prefix: srv.Prefix + suffix, Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// seed stores one message through Backend.Append, so the entry is real,
// and returns its seq. A zero at leaves received_at unset.
func seed(t *testing.T, b *redisstore.Backend, room, user, text string, at time.Time) string {
	t.Helper()
	m := message.NewMessage(fmt.Sprintf("id-%s-%d", room, time.Now().UnixNano()), []byte(text))
	m.Metadata.Set(pipeline.MetaRoom, room)
	m.Metadata.Set(pipeline.MetaUser, user)
	m.Metadata.Set(pipeline.MetaConnID, "c1")
	if !at.IsZero() {
		m.Metadata.Set(pipeline.MetaReceivedAt, at.UTC().Format(time.RFC3339Nano))
	}
	a, err := b.Append(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return a.Seq
}

// collect runs Messages and returns "room/user/text" of every message.
func collect(t *testing.T, r *replay.Reader, q replay.Query) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var got []string
	err := r.Messages(ctx, q, func(e replay.Entry) error {
		got = append(got, e.Room+"/"+e.User+"/"+e.Text)
		return nil
	})
	return got, err
}

// TestMessages: every selection of Messages over seeded rooms, with pages
// of two entries so pagination is exercised.
func TestMessages(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	b := newBackend(t, srv, "")
	base := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	var seqs []string
	for i, m := range []struct{ room, user, text string }{
		{"lobby", "alice", "hi"},
		{"dev", "carol", "deploy now"},
		{"lobby", "bob", "hello world"},
		{"ops", "dave", "pager"},
		{"lobby", "alice", "two\nlines"},
		{"dev", "alice", "hello dev"},
	} {
		seqs = append(seqs, seed(t, b, m.room, m.user, m.text, base.Add(time.Duration(i)*time.Second)))
		time.Sleep(2 * time.Millisecond) // distinct milliseconds, for the time bounds
	}
	r := replay.NewReader(b, replay.Config{PageSize: 2, Logger: quiet})
	msOf := func(seq string) time.Time {
		s, _ := pipeline.ParseSeq(seq)
		return time.UnixMilli(int64(s.MS)).UTC()
	}
	rng := func(since, until string) replay.Range {
		t.Helper()
		r, err := replay.ParseRange(since, until, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name string
		q    replay.Query
		want []string
	}{
		{"room", replay.Query{Room: "lobby"}, []string{"lobby/alice/hi", "lobby/bob/hello world", "lobby/alice/two\nlines"}},
		{"user", replay.Query{Room: "lobby", Filter: replay.Filter{User: "alice"}}, []string{"lobby/alice/hi", "lobby/alice/two\nlines"}},
		{"grep", replay.Query{Room: "lobby", Filter: replay.Filter{Grep: regexp.MustCompile(`^h`)}}, []string{"lobby/alice/hi", "lobby/bob/hello world"}},
		{"since seq", replay.Query{Room: "lobby", Range: rng(seqs[2], "")}, []string{"lobby/bob/hello world", "lobby/alice/two\nlines"}},
		{"until seq", replay.Query{Room: "lobby", Range: rng("", seqs[2])}, []string{"lobby/alice/hi", "lobby/bob/hello world"}},
		{"since and until times", replay.Query{Room: "lobby", Range: rng(msOf(seqs[1]).Format(time.RFC3339Nano), msOf(seqs[2]).Format(time.RFC3339Nano))},
			[]string{"lobby/bob/hello world"}},
		{"relative since", replay.Query{Room: "lobby", Range: rng("-1h", "")}, []string{"lobby/alice/hi", "lobby/bob/hello world", "lobby/alice/two\nlines"}},
		{"all rooms in seq order", replay.Query{AllRooms: true}, []string{
			"lobby/alice/hi", "dev/carol/deploy now", "lobby/bob/hello world", "ops/dave/pager", "lobby/alice/two\nlines", "dev/alice/hello dev"}},
		{"all rooms by user and text", replay.Query{AllRooms: true, Filter: replay.Filter{User: "alice", Grep: regexp.MustCompile("hello")}},
			[]string{"dev/alice/hello dev"}},
		{"all rooms since", replay.Query{AllRooms: true, Range: rng(seqs[3], "")}, []string{"ops/dave/pager", "lobby/alice/two\nlines", "dev/alice/hello dev"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, r, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("entry fields", func(t *testing.T) {
		var got []replay.Entry
		err := r.Messages(context.Background(), replay.Query{Room: "ops"}, func(e replay.Entry) error {
			got = append(got, e)
			return nil
		})
		if err != nil || len(got) != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
		e := got[0]
		if e.ID != seqs[3] || !e.TS.Equal(base.Add(3*time.Second)) || e.Meta[pipeline.MetaConnID] != "c1" {
			t.Fatalf("entry = %+v, want seq %s at %v", e, seqs[3], base.Add(3*time.Second))
		}
		rec := e.Record()
		if rec.Seq != seqs[3] || rec.TS != "2026-11-26T03:00:03.000Z" || rec.Meta["conn_id"] != "c1" || rec.Meta["seq"] != "" {
			t.Fatalf("record = %+v", rec)
		}
	})

	t.Run("unknown room", func(t *testing.T) {
		_, err := collect(t, r, replay.Query{Room: "nowhere"})
		if !errors.Is(err, replay.ErrUnknownRoom) {
			t.Fatalf("got %v, want ErrUnknownRoom", err)
		}
	})
}

// TestParseRange: the accepted bounds, the inclusive until of a time, and
// the refused ones.
func TestParseRange(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	ms := now.UnixMilli()
	cases := []struct {
		name, since, until string
		want               replay.Range
		wantErr            bool
	}{
		{name: "open", want: replay.Range{}},
		{name: "seqs", since: "5-1", until: "9-2", want: replay.Range{Since: "5-1", Until: "9-2"}},
		{name: "time until takes its millisecond", until: "2026-11-26T03:00:00Z", want: replay.Range{Until: fmt.Sprintf("%d-18446744073709551615", ms)}},
		{name: "relative", since: "-15m", want: replay.Range{Since: fmt.Sprintf("%d-0", ms-15*60*1000)}},
		{name: "milliseconds", since: "1000", until: "2000", want: replay.Range{Since: "1000-0", Until: "2000-18446744073709551615"}},
		{name: "garbage", since: "yesterday", wantErr: true},
		{name: "reversed", since: "9-0", until: "5-0", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replay.ParseRange(tc.since, tc.until, now)
			if tc.wantErr {
				if !errors.Is(err, replay.ErrBadRange) {
					t.Fatalf("got %v, %v; want ErrBadRange", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestPrinter: the text and jsonl lines of messages, dead letters and
// results.
func TestPrinter(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 11, 26, 3, 0, 1, 123e6, time.UTC)
	msg := replay.Entry{ID: "5-0", MsgID: "u1", Room: "lobby", User: "alice", Text: `a\b` + "\nc\u0007", TS: ts,
		Meta: map[string]string{"room": "lobby", "user": "alice", "seq": "5-0", "conn_id": "c9"}}
	dl := replay.Entry{ID: "1795716957201-0", MsgID: "u2", Room: "lobby", User: "bob", Text: "spam", TS: ts,
		Meta: map[string]string{"room": "lobby", "user": "bob", "reason": "no spam", "code": "rejected", "moderator": "words", "received_at": ts.Format(time.RFC3339Nano)}}
	cases := []struct {
		name, format string
		print        func(p *replay.Printer) error
		want         string
	}{
		{"message text", "text", func(p *replay.Printer) error { return p.Message(msg) },
			`2026-11-26T03:00:01.123Z lobby alice: a\\b\nc\u0007`},
		{"message jsonl", "jsonl", func(p *replay.Printer) error { return p.Message(msg) },
			`{"id":"u1","seq":"5-0","room":"lobby","user":"alice","text":"a\\b\nc\u0007","ts":"2026-11-26T03:00:01.123Z","meta":{"conn_id":"c9"}}`},
		{"rejected text", "text", func(p *replay.Printer) error { return p.Rejected(dl) },
			`2026-11-26T18:15:57.201Z 1795716957201-0 lobby bob rejected by words: "no spam": spam`},
		{"rejected jsonl", "jsonl", func(p *replay.Printer) error { return p.Rejected(dl) },
			`{"id":"1795716957201-0","msg_id":"u2","ts":"2026-11-26T18:15:57.201Z","received_at":"2026-11-26T03:00:01.123Z","room":"lobby","user":"bob","moderator":"words","code":"rejected","reason":"no spam","text":"spam"}`},
		{"stored result", "text", func(p *replay.Printer) error {
			return p.Result(replay.Result{From: "lobby/5-0", Room: "b", Seq: "7-0"})
		},
			`lobby/5-0 -> b/7-0`},
		{"refused result", "text", func(p *replay.Printer) error {
			return p.Result(replay.Result{From: "9-0", Room: "b", Error: &replay.ResultError{Code: "rejected", Reason: "no", Moderator: "m"}})
		}, `9-0 -> b refused rejected by m: "no"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sb strings.Builder
			p := replay.NewPrinter(&sb, tc.format, false)
			if err := tc.print(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := sb.String(); got != tc.want+"\n" {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestParseSpeed: accepted and refused speeds.
func TestParseSpeed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"10x", 10, false}, {"0.5x", 0.5, false}, {"3", 3, false}, {"max", 0, false}, {"MAX", 0, false},
		{"0x", 0, true}, {"-2x", 0, true}, {"fast", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := replay.ParseSpeed(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
