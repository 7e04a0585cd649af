package auth_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/auth"
)

const examplePolicy = `rooms:
  - room: announcements
    send: '"admin" in claims.roles'
    reason: only admins post announcements
  - room: "team-*"
    join: room in claims.rooms
  - room: "bot-*"
    join: user.startsWith("bot")
  - room: "*"
`

func TestPolicyAllow(t *testing.T) {
	t.Parallel()
	p, err := auth.ParsePolicy([]byte(examplePolicy), "policy.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	admin := auth.Identity{User: "root", Claims: map[string]any{"roles": []any{"admin"}, "rooms": []any{"team-red"}}}
	member := auth.Identity{User: "alice", Claims: map[string]any{"roles": []any{"user"}, "rooms": []any{"team-blue"}}}
	anon := auth.Identity{User: "bob"} // --auth none: no claims
	tests := []struct {
		name string
		id   auth.Identity
		room string
		act  auth.Action
		want string // "" = allowed; else part of the refusal
	}{
		{"anyone joins announcements", member, "announcements", auth.Join, ""},
		{"admin sends announcements", admin, "announcements", auth.Send, ""},
		{"member may not send announcements", member, "announcements", auth.Send, "only admins post announcements"},
		{"anonymous may not send announcements (no claims)", anon, "announcements", auth.Send, "only admins"},
		{"own team", member, "team-blue", auth.Join, ""},
		{"own team send defaults to join", member, "team-blue", auth.Send, ""},
		{"other team", member, "team-red", auth.Join, "does not allow you to join room team-red"},
		{"other team send", member, "team-red", auth.Send, "does not allow you to send"},
		{"team without claims fails closed", anon, "team-blue", auth.Join, "does not allow"},
		{"bot room by user", auth.Identity{User: "bot7"}, "bot-x", auth.Join, ""},
		{"bot room refused", member, "bot-x", auth.Join, "does not allow"},
		{"catch-all", anon, "lobby", auth.Send, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Allow(tt.id, tt.room, tt.act)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want allowed", err)
				}
				return
			}
			if !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrForbidden saying %q", err, tt.want)
			}
		})
	}

	strict, err := auth.ParsePolicy([]byte("rooms:\n  - room: lobby\n"), "p.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.Allow(anon, "elsewhere", auth.Join); !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "no rule") {
		t.Fatalf("unmatched room: got %v, want ErrForbidden (no rule)", err)
	}
}

func TestPolicyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, want string
	}{
		{"empty", "", "policy.yaml: the rooms policy is empty"},
		{"not a list", "rooms: lobby\n", "policy.yaml:1: rooms must be a list"},
		{"unknown key", "rooms:\n  - room: lobby\n    joins: 'true'\n", "policy.yaml:3:"},
		{"missing room", "rooms:\n  - join: 'true'\n", "policy.yaml:2: rule 1: room is missing"},
		{"bad pattern", "rooms:\n  - room: lobby\n  - room: 'team-['\n", "policy.yaml:3: rule 2: room pattern"},
		{"undeclared", "rooms:\n  - room: lobby\n\n    join: rom == 'x'\n", "policy.yaml:4: rule 1: join: undeclared reference to 'rom'"},
		{"block scalar", "rooms:\n  - room: lobby\n    send: |\n      user == 'a' &&\n      claim.x\n", "policy.yaml:5: rule 1: send: undeclared reference to 'claim'"},
		{"not bool", "rooms:\n  - room: lobby\n    join: user\n", "policy.yaml:3: rule 1: join must be of type bool, not string"},
		{"yaml", "rooms: [\n", "policy.yaml: yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.ParsePolicy([]byte(tt.src), "policy.yaml", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAuthenticatorAllow(t *testing.T) {
	t.Parallel()
	a, err := auth.New(auth.Config{RoomsPolicy: writeFile(t, "p.yaml", examplePolicy)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	id := auth.Identity{User: "alice", Rooms: []string{"lobby", "announcements"}, Publish: []string{"lobby"}}
	if err := a.Allow(id, "lobby", auth.Send); err != nil {
		t.Fatalf("lobby: got %v, want allowed", err)
	}
	if err := a.Allow(id, "news", auth.Join); !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "token does not allow joining") {
		t.Fatalf("news: got %v, want the token's refusal", err)
	}
	if err := a.Allow(id, "announcements", auth.Send); !errors.Is(err, auth.ErrForbidden) || !strings.Contains(err.Error(), "token does not allow sending") {
		t.Fatalf("announcements send: got %v, want the token's refusal", err)
	}
	if _, err := auth.New(auth.Config{RoomsPolicy: writeFile(t, "bad.yaml", "rooms:\n  - room: x\n    join: nope\n")}); err == nil || !strings.Contains(err.Error(), "bad.yaml:3:") {
		t.Fatalf("bad policy: got %v, want file:line", err)
	}
}

// TestReloadPolicy proves that ReloadPolicy puts a changed policy file in
// force, that a broken file is refused with its file and line while the
// policy in force stays, and that without a policy file it does nothing.
func TestReloadPolicy(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "p.yaml", "rooms:\n  - room: lobby\n")
	a, err := auth.New(auth.Config{RoomsPolicy: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	anon := auth.Identity{User: "alice"}
	allowed := func(room string) bool { return a.Allow(anon, room, auth.Join) == nil }
	if !allowed("lobby") || allowed("garden") {
		t.Fatalf("before the reload: lobby %v, garden %v; want true, false", allowed("lobby"), allowed("garden"))
	}
	if err := os.WriteFile(file, []byte("rooms:\n  - room: garden\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadPolicy(); err != nil {
		t.Fatal(err)
	}
	if allowed("lobby") || !allowed("garden") {
		t.Fatalf("after the reload: lobby %v, garden %v; want false, true", allowed("lobby"), allowed("garden"))
	}
	if err := os.WriteFile(file, []byte("rooms:\n  - room: lobby\n    join: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadPolicy(); err == nil || !strings.Contains(err.Error(), "p.yaml:3:") {
		t.Fatalf("broken file: got %v, want an error at p.yaml:3", err)
	}
	if allowed("lobby") || !allowed("garden") {
		t.Fatal("a broken file changed the policy in force")
	}
	none, err := auth.New(auth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(none.Close)
	if err := none.ReloadPolicy(); err != nil || none.Allow(anon, "anywhere", auth.Join) != nil {
		t.Fatalf("without a policy: reload %v; want nothing to reload and every room allowed", err)
	}
	var unset *auth.Authenticator // ModeNone without a policy
	if err := unset.ReloadPolicy(); err != nil || unset.Allow(anon, "anywhere", auth.Join) != nil {
		t.Fatalf("nil authenticator: reload %v; want nothing to reload and every room allowed", err)
	}
}
