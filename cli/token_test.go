package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/internal/testserver"
	"github.com/chatstream/chatstream/internal/wstest"
	"github.com/chatstream/chatstream/server"
)

// TestTokenCommand: the token the command prints signs alice in on a real
// server with --auth jwt, with her display name and rooms.
func TestTokenCommand(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("a-development-secret-of-32-bytes-or-more\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"token", "--secret-file", secret, "--user", "alice", "--name", "Alice L.", "--rooms", "lobby,team-*",
		"--publish", "lobby", "--ttl", "10m", "--issuer", "https://id.test", "--audience", "chat", "--claim", "role=vip"}
	if code := Run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("token exited %d: %s", code, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := testserver.Start(t, server.Config{Addr: "127.0.0.1:0", Logger: quiet, Auth: auth.Config{
		Mode: auth.ModeJWT, SecretFile: secret, Issuer: "https://id.test", Audience: "chat",
	}})
	c, err := wstest.DialHeader(srv.URL(), "", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f, err := c.Await("authed", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var authed struct{ User, Name, Exp string }
	if err := json.Unmarshal([]byte(f.Raw), &authed); err != nil {
		t.Fatal(err)
	}
	exp, _ := time.Parse(time.RFC3339, authed.Exp)
	if authed.User != "alice" || authed.Name != "Alice L." || time.Until(exp) > 10*time.Minute || time.Until(exp) < 9*time.Minute {
		t.Fatalf("got %s, want alice, Alice L., exp in 10 minutes", f.Raw)
	}
	for _, tt := range []struct {
		frame map[string]any
		want  string
	}{
		{map[string]any{"type": "join", "room": "team-red", "history": 0}, "joined"},
		{map[string]any{"type": "join", "room": "news", "history": 0}, "forbidden"},
		{map[string]any{"type": "send", "room": "team-red", "text": "hi"}, "forbidden"},
	} {
		if err := c.Send(tt.frame); err != nil {
			t.Fatal(err)
		}
		f, err := c.AwaitFunc(func(f wstest.Frame) bool { return f.Type == "joined" || f.Type == "error" }, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Type; got == "error" {
			got = f.Code
			if got != tt.want {
				t.Fatalf("%v: got %s, want %s", tt.frame, f.Raw, tt.want)
			}
		} else if got != tt.want {
			t.Fatalf("%v: got %s, want %s", tt.frame, f.Raw, tt.want)
		}
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"invisible user", []string{"token", "--secret-file", secret, "--user", "\u3164"}, "HANGUL FILLER"},
		{"short secret", []string{"token", "--secret-file", writeTemp(t, "short\n"), "--user", "alice"}, "at least 32"},
		{"bad pattern", []string{"token", "--secret-file", secret, "--user", "alice", "--rooms", "team-["}, "room pattern"},
		{"no user", []string{"token", "--secret-file", secret}, "--user"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			if code := Run(context.Background(), tt.args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exited %d: %s; want 2 saying %q", code, errOut.String(), tt.want)
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTokenEmptyPattern: an empty pattern in --rooms or --publish is a
// usage error, never a token whose rooms claim is left out (every room).
func TestTokenEmptyPattern(t *testing.T) {
	t.Parallel()
	secret := writeTemp(t, "a-development-secret-of-32-bytes-or-more\n")
	v, err := auth.NewVerifier(auth.Config{Mode: auth.ModeJWT, SecretFile: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	cases := []struct {
		name, rooms, publish string
		wantErr              string   // "" when a token is printed
		wantRooms, wantPub   []string // the token's rooms and publish; nil: every room
	}{
		{name: "comma only", rooms: ",", wantErr: `--rooms ",": empty room pattern`},
		{name: "blank", rooms: " ", wantErr: `--rooms " ": empty room pattern`},
		{name: "commas and blanks", rooms: " , ,", wantErr: "--rooms"},
		{name: "double comma", rooms: "lobby,,news", wantErr: `--rooms "lobby,,news": empty room pattern`},
		{name: "trailing comma", rooms: "lobby,", wantErr: "empty room pattern"},
		{name: "publish comma only", rooms: "lobby", publish: ",", wantErr: `--publish ",": empty room pattern`},
		{name: "publish double comma", publish: "lobby,,news", wantErr: "leave --publish out for the rooms of --rooms"},
		{name: "spaces trimmed", rooms: " lobby , team-* ", wantRooms: []string{"lobby", "team-*"}, wantPub: []string{"lobby", "team-*"}},
		{name: "publish only", publish: "lobby", wantPub: []string{"lobby"}},
		{name: "neither", wantRooms: nil, wantPub: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"token", "--secret-file", secret, "--user", "alice"}
			if tc.rooms != "" {
				args = append(args, "--rooms", tc.rooms)
			}
			if tc.publish != "" {
				args = append(args, "--publish", tc.publish)
			}
			var out, errOut bytes.Buffer
			code := Run(context.Background(), args, &out, &errOut)
			if tc.wantErr != "" {
				if code != 2 || !strings.Contains(errOut.String(), tc.wantErr) || out.Len() != 0 {
					t.Fatalf("%q: exited %d, printed %q, said %q; want 2, no token, saying %q", args, code, out.String(), errOut.String(), tc.wantErr)
				}
				return
			}
			if code != 0 {
				t.Fatalf("%q: exited %d: %s", args, code, errOut.String())
			}
			id, err := v.Verify(strings.TrimSpace(out.String()))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(id.Rooms, tc.wantRooms) || (id.Rooms == nil) != (tc.wantRooms == nil) {
				t.Errorf("rooms = %#v, want %#v", id.Rooms, tc.wantRooms)
			}
			if !slices.Equal(id.Publish, tc.wantPub) || (id.Publish == nil) != (tc.wantPub == nil) {
				t.Errorf("publish = %#v, want %#v", id.Publish, tc.wantPub)
			}
		})
	}
}
