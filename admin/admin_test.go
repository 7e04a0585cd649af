package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/admin"
	"github.com/chatstream/chatstream/backend"
	"github.com/chatstream/chatstream/internal/testredis"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
	"github.com/chatstream/chatstream/server"
)

const token = "s3cret-token-0123456789"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a Redis backend with seeded rooms and dead letters.
type fixture struct {
	rs   *testredis.Server
	b    *redisstore.Backend
	seqs []string // of lobby, in order
	dls  []string // dead-letter IDs, in order
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rs := testredis.Start(t)
	b, err := redisstore.New(redisstore.Config{URL: rs.URL, Prefix: rs.Prefix, Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f := &fixture{rs: rs, b: b}
	ctx := context.Background()
	msg := func(room, user, text string) *message.Message {
		m := message.NewMessage(fmt.Sprintf("id-%d", time.Now().UnixNano()), []byte(text))
		m.Metadata.Set(pipeline.MetaRoom, room)
		m.Metadata.Set(pipeline.MetaUser, user)
		m.Metadata.Set(pipeline.MetaReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
		return m
	}
	for i := range 5 {
		a, err := b.Append(ctx, msg("lobby", "alice", fmt.Sprintf("m%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.seqs = append(f.seqs, a.Seq)
	}
	for _, room := range []string{"a-room", "dev", "zeta"} {
		if _, err := b.Append(ctx, msg(room, "bob", "hi")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		m := msg("lobby", "eve", fmt.Sprintf("spam%d", i))
		m.Metadata.Set(pipeline.MetaCode, pipeline.CodeRejected)
		m.Metadata.Set(pipeline.MetaReason, "spam")
		m.Metadata.Set(pipeline.MetaModerator, "words")
		if err := b.DeadLetter(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	xs, err := b.Client().XRange(ctx, b.Keys().Rejected(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range xs {
		f.dls = append(f.dls, x.ID)
	}
	return f
}

func (f *fixture) handler(t *testing.T) http.Handler {
	t.Helper()
	h, err := admin.New(admin.Config{Token: token, Source: replay.NewReader(f.b, replay.Config{Logger: quiet}), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// get runs one request against h with the given Authorization header and
// decodes the JSON body into out (when not nil).
func get(t *testing.T, h http.Handler, target, auth string, out any) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("%s: content type %q, body %s", target, ct, rec.Body)
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s: %v in %s", target, err, rec.Body)
		}
	}
	return rec
}

type messagesBody struct {
	Messages []replay.MessageRecord `json:"messages"`
	Next     string                 `json:"next"`
}

// TestAuthorisation: no header or a wrong token is 401 with a Bearer
// challenge; the right token is 200 with the data.
func TestAuthorisation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := f.handler(t)
	cases := []struct {
		name, auth string
		want       int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"token prefix", "Bearer " + token[:4], http.StatusUnauthorized},
		{"wrong scheme", "Basic " + token, http.StatusUnauthorized},
		{"right token", "Bearer " + token, http.StatusOK},
		{"scheme in lower case", "bearer " + token, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body messagesBody
			rec := get(t, h, "/api/rooms/lobby/messages", tc.auth, &body)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == http.StatusUnauthorized {
				if rec.Header().Get("WWW-Authenticate") == "" || body.Messages != nil {
					t.Fatalf("401 without challenge or with data: %v %s", rec.Header(), rec.Body)
				}
				return
			}
			if len(body.Messages) != 5 || body.Messages[0].Seq != f.seqs[0] || body.Messages[0].Text != "m0" || body.Next != "" {
				t.Fatalf("body = %+v", body)
			}
		})
	}
}

// TestPagination: limit and next walk a room's messages, the dead letters
// and the rooms without gaps or repeats.
func TestPagination(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := f.handler(t)
	auth := "Bearer " + token

	var seqs []string
	next, pages := "", 0
	for pages = 1; pages < 10; pages++ {
		var body messagesBody
		if rec := get(t, h, "/api/rooms/lobby/messages?limit=2&since="+url.QueryEscape(next), auth, &body); rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		for _, m := range body.Messages {
			seqs = append(seqs, m.Seq)
		}
		if next = body.Next; next == "" {
			break
		}
	}
	if fmt.Sprint(seqs) != fmt.Sprint(f.seqs) || pages != 3 {
		t.Fatalf("paged %v in %d pages, want %v in 3", seqs, pages, f.seqs)
	}

	var until messagesBody
	get(t, h, "/api/rooms/lobby/messages?since="+f.seqs[1]+"&until="+f.seqs[3], auth, &until)
	if len(until.Messages) != 3 || until.Messages[0].Seq != f.seqs[1] || until.Messages[2].Seq != f.seqs[3] {
		t.Fatalf("since..until = %+v", until)
	}

	var rej struct {
		Rejected []replay.RejectedRecord `json:"rejected"`
		Next     string                  `json:"next"`
	}
	get(t, h, "/api/rejected?limit=2", auth, &rej)
	if len(rej.Rejected) != 2 || rej.Rejected[0].ID != f.dls[0] || rej.Rejected[0].Reason != "spam" || rej.Rejected[0].Moderator != "words" || rej.Next != f.dls[2] {
		t.Fatalf("rejected page 1 = %+v", rej)
	}
	get(t, h, "/api/rejected?limit=2&since="+rej.Next, auth, &rej)
	if len(rej.Rejected) != 1 || rej.Rejected[0].Text != "spam2" || rej.Next != "" {
		t.Fatalf("rejected page 2 = %+v", rej)
	}

	var rooms struct {
		Rooms []replay.RoomInfo `json:"rooms"`
		Next  string            `json:"next"`
	}
	get(t, h, "/api/rooms?limit=3", auth, &rooms)
	if len(rooms.Rooms) != 3 || rooms.Rooms[0].Room != "a-room" || rooms.Rooms[2].Room != "lobby" || rooms.Rooms[2].Length != 5 || rooms.Next != "lobby" {
		t.Fatalf("rooms page 1 = %+v", rooms)
	}
	get(t, h, "/api/rooms?limit=3&after="+rooms.Next, auth, &rooms)
	if len(rooms.Rooms) != 1 || rooms.Rooms[0].Room != "zeta" || rooms.Next != "" {
		t.Fatalf("rooms page 2 = %+v", rooms)
	}
}

// TestBadRequests: bad bounds and limits are 400, an unknown room 404,
// each with a JSON error.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := f.handler(t)
	cases := []struct {
		name, target string
		want         int
	}{
		{"bad since", "/api/rooms/lobby/messages?since=yesterday", http.StatusBadRequest},
		{"bad until", "/api/rejected?until=soon", http.StatusBadRequest},
		{"reversed", "/api/rooms/lobby/messages?since=9-0&until=5-0", http.StatusBadRequest},
		{"limit zero", "/api/rooms/lobby/messages?limit=0", http.StatusBadRequest},
		{"limit too large", "/api/rejected?limit=1001", http.StatusBadRequest},
		{"limit not a number", "/api/rooms?limit=ten", http.StatusBadRequest},
		{"bad room name", "/api/rooms/no%20spaces/messages", http.StatusBadRequest},
		{"unknown room", "/api/rooms/nowhere/messages", http.StatusNotFound},
		{"unknown endpoint", "/api/nothing", http.StatusNotFound},
		{"max limit", "/api/rejected?limit=1000", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Error string `json:"error"`
			}
			rec := get(t, h, tc.target, "Bearer "+token, &body)
			if rec.Code != tc.want || (tc.want != http.StatusOK && body.Error == "") {
				t.Fatalf("status %d error %q, want %d with an error: %s", rec.Code, body.Error, tc.want, rec.Body)
			}
		})
	}
}

// TestServerWiring: a server without a token answers 404 under /api/; with
// one, it serves the API over Redis, and answers 501 over memory.
func TestServerWiring(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cases := []struct {
		name    string
		token   string
		backend func(t *testing.T) *backend.Backend
		auth    string
		want    int
	}{
		{"no token configured", "", redisBackend(f), "Bearer " + token, http.StatusNotFound},
		{"token, no header", token, redisBackend(f), "", http.StatusUnauthorized},
		{"token, wrong", token, redisBackend(f), "Bearer x", http.StatusUnauthorized},
		{"token, right", token, redisBackend(f), "Bearer " + token, http.StatusOK},
		{"memory backend", token, func(t *testing.T) *backend.Backend {
			b, err := backend.Open(backend.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, "Bearer " + token, http.StatusNotImplemented},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Backend: tc.backend(t), Logger: quiet, AdminToken: tc.token})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = srv.Run(ctx) // a shutdown error would show as a failed request below
			}()
			t.Cleanup(func() { cancel(); <-done })
			req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/api/rooms/lobby/messages?limit=1", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == http.StatusOK {
				var m messagesBody
				if err := json.Unmarshal(body, &m); err != nil || len(m.Messages) != 1 || m.Next != f.seqs[1] {
					t.Fatalf("body %s (%v)", body, err)
				}
			}
		})
	}
}

// redisBackend returns a new backend on the fixture's Redis and prefix;
// the server owns and closes it.
func redisBackend(f *fixture) func(t *testing.T) *backend.Backend {
	return func(t *testing.T) *backend.Backend {
		t.Helper()
		b, err := redisstore.New(redisstore.Config{URL: f.rs.URL, Prefix: f.rs.Prefix, Partitions: 4, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return backend.Redis(b, quiet)
	}
}
