package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	_ "github.com/chatstream/chatstream/pipeline/moderation/rules" // the rules kind
	"github.com/chatstream/chatstream/ws"
)

const authSecret = "ws-test-secret-0123456789abcdef0123456789"

// startAuth runs a gateway with --auth jwt (HS256 with authSecret) and the
// rooms policy, if any.
func startAuth(t *testing.T, cfg ws.Config, policy string, mods ...pipeline.Moderator) *harness {
	t.Helper()
	cfg.Auth = newAuth(t, policy)
	return start(t, cfg, mods...)
}

// newAuth is the JWT verifier of startAuth, with policy as its rooms
// policy ("" for none).
func newAuth(t *testing.T, policy string) *auth.Authenticator {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(authSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	acfg := auth.Config{Mode: auth.ModeJWT, SecretFile: secret, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if policy != "" {
		acfg.RoomsPolicy = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(acfg.RoomsPolicy, []byte(policy), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := auth.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// token signs a token for sub valid for ttl with the extra claims.
func token(t *testing.T, sub string, ttl time.Duration, extra jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(authSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialBearer connects with an Authorization header and ?user=claimed,
// which --auth jwt ignores.
func (h *harness) dialBearer(t *testing.T, claimed, tok string) *wstest.Client {
	t.Helper()
	hdr := http.Header{}
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	c, err := wstest.DialHeader(h.srv.URL, claimed, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// authedFields are the fields of an authed frame beyond wstest.Frame's.
type authedFields struct {
	Name string `json:"name"`
	Exp  string `json:"exp"`
}

func awaitAuthed(t *testing.T, c *wstest.Client) (wstest.Frame, authedFields) {
	t.Helper()
	f, err := c.Await(ws.TypeAuthed, wait)
	if err != nil {
		t.Fatal(err)
	}
	var a authedFields
	if err := json.Unmarshal([]byte(f.Raw), &a); err != nil {
		t.Fatal(err)
	}
	return f, a
}

// awaitClose waits for the connection to end and returns its close code.
func awaitClose(t *testing.T, c *wstest.Client) (int, string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-c.Frames():
			if !ok {
				var ce *websocket.CloseError
				if !errors.As(c.CloseErr, &ce) {
					t.Fatalf("connection ended with %v, want a close frame", c.CloseErr)
				}
				return ce.Code, ce.Text
			}
		case <-deadline:
			t.Fatal("connection still open")
		}
	}
}

func awaitError(t *testing.T, c *wstest.Client, code string) wstest.Frame {
	t.Helper()
	f, err := c.Await(ws.TypeError, wait)
	if err != nil {
		t.Fatal(err)
	}
	if f.Code != code {
		t.Fatalf("got error %s (%s), want %s", f.Code, f.Message, code)
	}
	return f
}

func TestAuthHeader(t *testing.T) {
	t.Parallel()
	h := startAuth(t, ws.Config{}, "")
	c := h.dialBearer(t, "mallory", token(t, "alice", time.Hour, jwt.MapClaims{"name": "Alice L."}))
	f, a := awaitAuthed(t, c)
	if f.User != "alice" || a.Name != "Alice L." || f.Ref != "" {
		t.Fatalf("got authed %s, want user alice (not the ignored ?user=), name Alice L., no ref", f.Raw)
	}
	if exp, err := time.Parse(time.RFC3339, a.Exp); err != nil || exp.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("got exp %q, want the token's, about an hour ahead", a.Exp)
	}
	join(t, c, "lobby", 0)
	if err := c.Say("lobby", "hi", "r1"); err != nil {
		t.Fatal(err)
	}
	m, err := c.Await(ws.TypeMessage, wait)
	if err != nil {
		t.Fatal(err)
	}
	if m.User != "alice" {
		t.Fatalf("got message from %q, want alice (the token's sub)", m.User)
	}

	bad := h.dialBearer(t, "alice", token(t, "alice", -time.Hour, nil))
	e := awaitError(t, bad, ws.CodeUnauthorized)
	if !strings.Contains(e.Message, "expired") {
		t.Fatalf("got %q, want the reason (expired)", e.Message)
	}
	if code, _ := awaitClose(t, bad); code != ws.CloseUnauthorized {
		t.Fatalf("got close %d, want 4001", code)
	}

	notBearer := h.dialBearer(t, "", "")
	_ = notBearer.Conn.Close()
	hdr := http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}
	basic, err := wstest.DialHeader(h.srv.URL, "", hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(basic.Close)
	awaitError(t, basic, ws.CodeUnauthorized)
	if code, _ := awaitClose(t, basic); code != ws.CloseUnauthorized {
		t.Fatalf("Basic authorization: got close %d, want 4001", code)
	}
}

func TestAuthFirstFrame(t *testing.T) {
	t.Parallel()
	h := startAuth(t, ws.Config{}, "")
	c := h.dialBearer(t, "bob", "")
	// Nothing but auth is served before it.
	if err := c.Join("lobby", 0); err != nil {
		t.Fatal(err)
	}
	awaitError(t, c, ws.CodeUnauthorized)
	if err := c.Send(map[string]any{"type": "auth", "token": token(t, "alice", time.Hour, nil), "ref": "a1"}); err != nil {
		t.Fatal(err)
	}
	f, _ := awaitAuthed(t, c)
	if f.User != "alice" || f.Ref != "a1" {
		t.Fatalf("got %s, want authed alice with ref a1", f.Raw)
	}
	join(t, c, "lobby", 0)
	if err := c.Say("lobby", "I am definitely the real bob", "r1"); err != nil {
		t.Fatal(err)
	}
	m, err := c.Await(ws.TypeMessage, wait)
	if err != nil {
		t.Fatal(err)
	}
	if m.User != "alice" {
		t.Fatalf("got a message from %q, want alice: ?user=bob must not count", m.User)
	}

	tests := []struct {
		name, token, reason string
	}{
		{"bad signature", token(t, "alice", time.Hour, nil) + "x", "bad signature"},
		{"garbage", "garbage", "malformed"},
		{"invisible sub", token(t, "\u3164", time.Hour, nil), "HANGUL FILLER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dialBearer(t, "", "")
			if err := c.Send(map[string]any{"type": "auth", "token": tt.token, "ref": "a2"}); err != nil {
				t.Fatal(err)
			}
			e := awaitError(t, c, ws.CodeUnauthorized)
			if e.Ref != "a2" || !strings.Contains(e.Message, tt.reason) || strings.Contains(e.Raw, tt.token) {
				t.Fatalf("got %s, want unauthorized with ref a2 saying %q, not quoting the token", e.Raw, tt.reason)
			}
			if code, _ := awaitClose(t, c); code != ws.CloseUnauthorized {
				t.Fatalf("got close %d, want 4001", code)
			}
		})
	}
}

func TestAuthTimeout(t *testing.T) {
	t.Parallel()
	h := startAuth(t, ws.Config{AuthTimeout: 300 * time.Millisecond}, "")
	c := h.dialBearer(t, "", "")
	// Frames before the deadline do not extend it. (On a loaded machine
	// the deadline may pass while they are sent: the server has closed
	// the connection then, and the close frame is what counts.)
	for range 3 {
		if err := c.Join("lobby", 0); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, reason := awaitClose(t, c)
	if code != ws.CloseUnauthorized || !strings.Contains(reason, "time to authenticate") {
		t.Fatalf("got close %d %q, want 4001 for the authentication timeout", code, reason)
	}
}

// TestAuthExpiryAnswersSendsFirst: a send still waiting for the store
// when the token expires is acked before the connection closes with 4002,
// and the connection gets no more messages of its rooms meanwhile.
func TestAuthExpiryAnswersSendsFirst(t *testing.T) {
	t.Parallel()
	h, store, gate := startGated(t, ws.Config{Auth: newAuth(t, "")})
	// jwt's exp has whole seconds, and the connection ends the leeway
	// after exp: 2–3 s from now.
	const ttl = 3*time.Second - auth.DefaultLeeway
	c := newRawClient(t, h, "")
	c.write(t, map[string]any{"type": "auth", "token": token(t, "alice", ttl, nil)})
	authed := c.until(t, func(f wstest.Frame) bool { return f.Type == ws.TypeAuthed })
	var a authedFields
	if err := json.Unmarshal([]byte(authed[len(authed)-1].Raw), &a); err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, a.Exp)
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, map[string]any{"type": "join", "room": "lobby"})
	c.until(t, func(f wstest.Frame) bool { return f.Type == ws.TypeJoined })
	c.write(t, map[string]any{"type": "send", "room": "lobby", "text": "held", "ref": "a"})
	store.waitQueued(t, 1)
	if time.Now().After(exp.Add(auth.DefaultLeeway)) {
		t.Fatalf("the send reached the store after the token expired (%s); the test needs a longer token", a.Exp)
	}
	time.Sleep(time.Until(exp.Add(auth.DefaultLeeway + 300*time.Millisecond)))
	h.deliverLive("lobby")
	time.Sleep(100 * time.Millisecond) // time for it to arrive, were it sent
	close(gate)
	c.closesAfter(t, []string{"ack:a"}, ws.CloseTokenExpired, "token expired")
}

func TestAuthExpiryAndRefresh(t *testing.T) {
	t.Parallel()
	h := startAuth(t, ws.Config{}, "")
	// jwt's exp has whole seconds, and the connection ends the leeway
	// after exp: this token ends it within 1–2 s.
	const ttl = 2*time.Second - auth.DefaultLeeway
	c := h.dialBearer(t, "", token(t, "alice", ttl, nil))
	awaitAuthed(t, c)
	code, reason := awaitClose(t, c)
	if code != ws.CloseTokenExpired || reason != "token expired" {
		t.Fatalf("got close %d %q, want 4002 token expired", code, reason)
	}

	r := h.dialBearer(t, "", token(t, "alice", ttl, jwt.MapClaims{"rooms": []any{"lobby", "news"}}))
	awaitAuthed(t, r)
	join(t, r, "lobby", 0)
	join(t, r, "news", 0)
	// A token for another user is refused and changes nothing.
	if err := r.Send(map[string]any{"type": "auth", "token": token(t, "bob", time.Hour, nil), "ref": "x"}); err != nil {
		t.Fatal(err)
	}
	if e := awaitError(t, r, ws.CodeUnauthorized); !strings.Contains(e.Message, "another user") {
		t.Fatalf("got %q, want the other user refused", e.Message)
	}
	// A fresh token for alice that no longer allows news.
	if err := r.Send(map[string]any{"type": "auth", "token": token(t, "alice", time.Hour, jwt.MapClaims{"rooms": []any{"lobby"}}), "ref": "r2"}); err != nil {
		t.Fatal(err)
	}
	left, err := r.Await(ws.TypeLeft, wait)
	if err != nil || left.Room != "news" {
		t.Fatalf("got %v %v, want left news (the fresh token drops it)", left.Raw, err)
	}
	f, a := awaitAuthed(t, r)
	if f.Ref != "r2" {
		t.Fatalf("got %s, want authed r2", f.Raw)
	}
	if exp, _ := time.Parse(time.RFC3339, a.Exp); exp.Before(time.Now().Add(50 * time.Minute)) {
		t.Fatalf("got exp %s, want the fresh token's", a.Exp)
	}
	time.Sleep(2500 * time.Millisecond) // past the first token's exp and leeway
	if err := r.Say("lobby", "still here", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Await(ws.TypeAck, wait); err != nil {
		t.Fatalf("after the first exp: %v, want the refreshed connection to stay", err)
	}
}

// TestAuthExpiryLeeway: a token accepted within the clock skew allowed on
// its exp (auth.DefaultLeeway), as the first token or a fresh one, keeps
// the connection open until exp plus that skew, and then closes it with
// 4002.
func TestAuthExpiryLeeway(t *testing.T) {
	t.Parallel()
	// stay is how long a connection whose token is within the leeway must
	// stay open; every closing token below lasts at least 1 s more.
	const stay = 500 * time.Millisecond
	// closing tokens end the connection within 1–2 s (exp has whole
	// seconds); the others 20 s after the test.
	const closing, expired = 2*time.Second - auth.DefaultLeeway, -10 * time.Second
	cases := []struct {
		name string
		// how the token comes: "header", "frame" (the first auth frame)
		// or "refresh" (an auth frame after a valid header token).
		how    string
		ttl    time.Duration
		closes bool
	}{
		{name: "header token expired 10 s ago", how: "header", ttl: expired},
		{name: "first auth frame expired 10 s ago", how: "frame", ttl: expired},
		{name: "refresh expired 10 s ago", how: "refresh", ttl: expired},
		{name: "header token at the end of its leeway", how: "header", ttl: closing, closes: true},
		{name: "refresh at the end of its leeway", how: "refresh", ttl: closing, closes: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startAuth(t, ws.Config{}, "")
			tok := token(t, "alice", tc.ttl, nil)
			var c *wstest.Client
			switch tc.how {
			case "header":
				c = h.dialBearer(t, "", tok)
			case "frame", "refresh":
				first := ""
				if tc.how == "refresh" {
					first = token(t, "alice", time.Hour, nil)
				}
				c = h.dialBearer(t, "", first)
				if first != "" {
					awaitAuthed(t, c)
				}
				if err := c.Send(map[string]any{"type": "auth", "token": tok, "ref": "a1"}); err != nil {
					t.Fatal(err)
				}
			}
			f, a := awaitAuthed(t, c)
			if tc.how != "header" && f.Ref != "a1" {
				t.Fatalf("got %s, want authed a1", f.Raw)
			}
			exp, err := time.Parse(time.RFC3339, a.Exp)
			if err != nil {
				t.Fatal(err)
			}
			staysOpen(t, c, stay)
			if !tc.closes {
				if err := c.Send(map[string]any{"type": "ping", "ref": "p1"}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Await(ws.TypePong, wait); err != nil {
					t.Fatalf("after %v: %v, want the connection open", stay, err)
				}
				return
			}
			code, reason := awaitClose(t, c)
			if code != ws.CloseTokenExpired || reason != "token expired" {
				t.Fatalf("got close %d %q, want 4002 token expired", code, reason)
			}
			if end := exp.Add(auth.DefaultLeeway); time.Now().Before(end) {
				t.Fatalf("closed at %v, before exp %v plus the leeway", time.Now().Format(time.RFC3339Nano), exp)
			}
		})
	}
}

// staysOpen fails if c's connection ends within d; it discards c's frames
// meanwhile.
func staysOpen(t *testing.T, c *wstest.Client, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-c.Frames():
			if !ok {
				t.Fatalf("connection ended within %v: %v", d, c.CloseErr)
			}
		case <-deadline:
			return
		}
	}
}

func TestAuthForbidden(t *testing.T) {
	t.Parallel()
	const policy = `rooms:
  - room: announcements
    send: '"admin" in claims.roles'
    reason: only admins post announcements
  - room: "*"
`
	h := startAuth(t, ws.Config{}, policy)
	c := h.dialBearer(t, "", token(t, "alice", time.Hour, jwt.MapClaims{
		"rooms": []any{"lobby", "team-*", "announcements"}, "publish": "lobby,announcements", "roles": []any{"user"},
	}))
	awaitAuthed(t, c)
	for _, tt := range []struct{ room, reason string }{
		{"news", "does not allow joining room news"},
	} {
		if err := c.Join(tt.room, 0); err != nil {
			t.Fatal(err)
		}
		if e := awaitError(t, c, ws.CodeForbidden); e.Room != tt.room || !strings.Contains(e.Message, tt.reason) {
			t.Fatalf("join %s: got %s, want forbidden saying %q", tt.room, e.Raw, tt.reason)
		}
	}
	join(t, c, "team-red", 0)
	join(t, c, "announcements", 0)
	for _, tt := range []struct{ room, reason string }{
		{"team-red", "does not allow sending to room team-red"},
		{"announcements", "only admins post announcements"},
	} {
		if err := c.Say(tt.room, "hello", "s-"+tt.room); err != nil {
			t.Fatal(err)
		}
		if e := awaitError(t, c, ws.CodeForbidden); e.Ref != "s-"+tt.room || !strings.Contains(e.Message, tt.reason) {
			t.Fatalf("send %s: got %s, want forbidden saying %q", tt.room, e.Raw, tt.reason)
		}
	}
	admin := h.dialBearer(t, "", token(t, "root", time.Hour, jwt.MapClaims{"roles": []any{"admin"}}))
	awaitAuthed(t, admin)
	join(t, admin, "announcements", 0)
	if err := admin.Say("announcements", "maintenance at noon", "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Await(ws.TypeAck, wait); err != nil {
		t.Fatalf("admin send: %v, want ack", err)
	}
	if m, err := c.Await(ws.TypeMessage, wait); err != nil || m.Text != "maintenance at noon" {
		t.Fatalf("alice reading announcements: got %v %v, want the admin's message", m.Raw, err)
	}
}

// vipOnly is the docs' vip-only rule (docs/PLUGINS.md §4): members of
// vip need the token claim role=vip, which reaches moderation as metadata
// claim.role.
const vipOnly = `moderators:
  - kind: rules
    name: vip
    rules:
      - name: vip-only
        when: room == "vip" && !("claim.role" in metadata && metadata["claim.role"] == "vip")
        action: reject
        reason: members only
`

func TestAuthClaimsReachModeration(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "moderation.yaml")
	if err := os.WriteFile(path, []byte(vipOnly), 0o600); err != nil {
		t.Fatal(err)
	}
	chain, err := moderation.LoadFile(path, moderation.Env{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h := startAuth(t, ws.Config{}, "", chain.Moderators()...)
	for _, tt := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"vip", jwt.MapClaims{"role": "vip"}, ws.TypeAck},
		{"other role", jwt.MapClaims{"role": "guest"}, ws.TypeError},
		{"no role", nil, ws.TypeError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dialBearer(t, "", token(t, "u-"+strings.ReplaceAll(tt.name, " ", "-"), time.Hour, tt.claims))
			awaitAuthed(t, c)
			join(t, c, "vip", 0)
			if err := c.Say("vip", "hello members", "v1"); err != nil {
				t.Fatal(err)
			}
			f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Ref == "v1" && f.Type != ws.TypeMessage }, wait)
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tt.want || (f.Type == ws.TypeError && (f.Code != pipeline.CodeRejected || f.Message != "members only")) {
				t.Fatalf("got %s, want %s", f.Raw, tt.want)
			}
		})
	}
}

func TestAuthNone(t *testing.T) {
	t.Parallel()
	h := start(t, ws.Config{})
	for _, tt := range []struct{ name, user, reason string }{
		{"hangul filler", "\u3164", "U+3164 HANGUL FILLER"},
		{"braille blank", "\u2800", "BRAILLE PATTERN BLANK"},
		{"right-to-left override", "\u202Eecila", "bidirectional"},
		{"mixed scripts", "\u0430lice", "mixes Latin and Cyrillic"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wstest.Dial(h.srv.URL, tt.user)
			if err == nil || !strings.Contains(err.Error(), "HTTP 400") {
				t.Fatalf("got %v, want HTTP 400", err)
			}
			resp, err := http.Get(h.srv.URL + "/ws?user=" + strings.ReplaceAll(tt.user, "\u3164", "%E3%85%A4"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tt.reason) {
				t.Fatalf("got %d %q, want 400 saying %q", resp.StatusCode, body, tt.reason)
			}
		})
	}
	c := h.dial(t, "ａｌｉｃｅ")
	join(t, c, "lobby", 0)
	if err := c.Say("lobby", "hi", "r"); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Await(ws.TypeMessage, wait); err != nil || m.User != "alice" {
		t.Fatalf("got %v %v, want a message from alice (NFKC)", m.Raw, err)
	}
	if err := c.Send(map[string]any{"type": "auth", "token": "whatever", "ref": "a"}); err != nil {
		t.Fatal(err)
	}
	if e := awaitError(t, c, pipeline.CodeInvalid); !strings.Contains(e.Message, "does not use tokens") {
		t.Fatalf("got %q, want the auth frame refused", e.Message)
	}
}

// TestAuthPresenceMerges: two connections with tokens for one user are one
// present user, whatever ?user= they claimed.
func TestAuthPresenceMerges(t *testing.T) {
	t.Parallel()
	h := startAuth(t, ws.Config{}, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.hub.RunPresence(ctx, h.backend.NewPresence("test-instance", 0), 20*time.Millisecond)
	var first *wstest.Client
	for _, claimed := range []string{"x", "y"} {
		c := h.dialBearer(t, claimed, token(t, "alice", time.Hour, nil))
		awaitAuthed(t, c)
		join(t, c, "lobby", 0)
		if first == nil {
			first = c
			if snap, err := c.Await(ws.TypePresence, wait); err != nil || strings.Join(snap.Users, ",") != "alice" {
				t.Fatalf("snapshot %v %v, want alice", snap.Raw, err)
			}
		}
	}
	bob := h.dialBearer(t, "", token(t, "bob", time.Hour, nil))
	awaitAuthed(t, bob)
	join(t, bob, "lobby", 0)
	p, err := first.AwaitFunc(func(f wstest.Frame) bool { return f.Type == ws.TypePresence && slices.Contains(f.Joined, "bob") }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != 2 {
		t.Fatalf("got presence %s, want a count of 2 (alice's two connections are one user)", p.Raw)
	}
}
