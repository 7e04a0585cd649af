package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/chatstream/chatstream/auth"
)

// tokenCmd prints a signed token for --auth jwt with --jwt-secret-file.
type tokenCmd struct {
	SecretFile string            `required:"" placeholder:"FILE" help:"The HS256 secret file (the server's --jwt-secret-file)."`
	User       string            `required:"" help:"The user (sub)."`
	Name       string            `help:"Display name shown in the page."`
	Rooms      string            `placeholder:"PATTERNS" help:"Comma-separated room patterns the user may join and read (lobby,team-*). Empty: every room."`
	Publish    string            `placeholder:"PATTERNS" help:"Comma-separated room patterns the user may send to. Empty: as --rooms."`
	TTL        time.Duration     `default:"1h" help:"How long the token is valid."`
	Issuer     string            `help:"iss (the server's --jwt-issuer)."`
	Audience   string            `help:"aud (the server's --jwt-audience)."`
	Claim      map[string]string `placeholder:"NAME=VALUE" help:"Extra string claims, which moderation rules see as metadata claim.NAME (repeatable: --claim role=vip)."`
}

// Run prints the token and a newline.
func (c *tokenCmd) Run(g *globals) error {
	secret, err := auth.ReadSecretFile(c.SecretFile)
	if err != nil {
		return usageError(err)
	}
	rooms, err := patternList("--rooms", c.Rooms, "every room")
	if err != nil {
		return usageError(err)
	}
	publish, err := patternList("--publish", c.Publish, "the rooms of --rooms")
	if err != nil {
		return usageError(err)
	}
	tok, err := auth.IssueHS256(secret, auth.Grant{
		User: c.User, Name: c.Name, Rooms: rooms, Publish: publish,
		TTL: c.TTL, Issuer: c.Issuer, Audience: c.Audience, Claims: c.Claim,
	})
	if err != nil {
		return usageError(err)
	}
	_, err = fmt.Fprintln(g.Stdout, tok)
	return err
}

// patternList splits the comma-separated patterns of flag; "" is nil: the
// claim is left out, which grants what absent says (for the error message).
// An empty pattern (",", "lobby,,news", " ") is refused: dropping it could
// leave no pattern, and so a token for every room.
func patternList(flag, s, absent string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			return nil, fmt.Errorf("%s %q: empty room pattern; give names or patterns such as lobby,team-*, or leave %s out for %s", flag, s, flag, absent)
		}
		out = append(out, p)
	}
	return out, nil
}
