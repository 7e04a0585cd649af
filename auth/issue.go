package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Grant describes a token to issue: who, for how long, and where.
type Grant struct {
	// User is the sub; it must pass the name rules.
	User string
	// Name is the display name; empty: none.
	Name string
	// Rooms and Publish are room patterns (ClaimRooms, ClaimPublish);
	// nil leaves the claim out (every room; Publish: as Rooms).
	Rooms, Publish []string
	// TTL is how long the token is valid; it must be positive.
	TTL time.Duration
	// Issuer and Audience, when set, become iss and aud.
	Issuer, Audience string
	// Claims are extra string claims (role, ...), which reach moderation
	// as claim.<name>.
	Claims map[string]string
	// Now is the issue time. Default time.Now().
	Now time.Time
}

// IssueHS256 returns a token of g signed with secret (HS256), for
// development, tests and small deployments whose token server shares the
// chat servers' --jwt-secret-file.
func IssueHS256(secret []byte, g Grant) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("auth: the secret has %d bytes; at least %d are needed", len(secret), MinSecretBytes)
	}
	user, err := NormalizeUser(g.User)
	if err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	if g.TTL <= 0 {
		return "", errors.New("auth: the token's lifetime must be positive")
	}
	now := g.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := jwt.MapClaims{}
	for k, v := range g.Claims {
		if registered[k] {
			return "", fmt.Errorf("auth: claim %q is set by its own option", k)
		}
		c[k] = v
	}
	c["sub"], c["iat"], c["exp"] = user, now.Unix(), now.Add(g.TTL).Unix()
	if g.Name != "" {
		if c[ClaimName], err = NormalizeDisplayName(g.Name); err != nil {
			return "", fmt.Errorf("auth: %w", err)
		}
	}
	for claim, list := range map[string][]string{ClaimRooms: g.Rooms, ClaimPublish: g.Publish} {
		if list == nil {
			continue
		}
		if err := CheckPatterns(list); err != nil {
			return "", fmt.Errorf("auth: %s: %w", claim, err)
		}
		c[claim] = list
	}
	if g.Issuer != "" {
		c["iss"] = g.Issuer
	}
	if g.Audience != "" {
		c["aud"] = g.Audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: signing: %w", err)
	}
	return s, nil
}

// ReadSecretFile reads an HS256 secret (surrounding white space trimmed) and
// checks its length.
func ReadSecretFile(file string) ([]byte, error) { return readSecret(file) }
