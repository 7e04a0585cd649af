package auth

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims a token may carry beside the registered ones.
const (
	// ClaimName is the display name.
	ClaimName = "name"
	// ClaimRooms lists the room patterns the user may join and read;
	// absent, every room; null is refused.
	ClaimRooms = "rooms"
	// ClaimPublish lists the room patterns the user may send to; absent
	// or null, it is ClaimRooms.
	ClaimPublish = "publish"
)

// MetaClaimPrefix prefixes the message metadata keys that carry a token's
// string claims to moderation: claim.role, claim.email, ...
const MetaClaimPrefix = "claim."

// MaxPatterns is the most patterns a rooms or publish claim may list.
const MaxPatterns = 100

// registered are the claims that are not copied into Identity.Meta.
var registered = map[string]bool{
	"sub": true, "iss": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true,
	ClaimName: true, ClaimRooms: true, ClaimPublish: true,
}

// Identity is who a connection is: the user, and what it may do.
type Identity struct {
	// User is the user name: the token's sub, or the ?user= of ModeNone,
	// normalised by the name rules.
	User string
	// Name is the display name (the token's name claim), or "".
	Name string
	// Expires is when the token expires; zero in ModeNone.
	Expires time.Time
	// ValidUntil is when the token stops being accepted: Expires plus the
	// clock skew the verifier allows (Config.Leeway); zero in ModeNone.
	ValidUntil time.Time
	// Rooms are the patterns of the rooms the user may join and read; nil
	// allows every room.
	Rooms []string
	// Publish are the patterns of the rooms the user may send to; nil
	// allows every room.
	Publish []string
	// Claims are the token's claims as decoded from JSON, for rooms
	// policies; nil in ModeNone.
	Claims map[string]any
	// Meta holds the token's other string claims under "claim.<name>",
	// stored with every message the user sends, for moderation rules.
	Meta map[string]string
}

// CanJoin reports whether the identity's own patterns let it join and read
// room; a rooms policy may still refuse it.
func (id Identity) CanJoin(room string) bool { return matchAny(id.Rooms, room) }

// CanPublish reports whether the identity's own patterns let it send to
// room; a rooms policy may still refuse it.
func (id Identity) CanPublish(room string) bool { return matchAny(id.Publish, room) }

func matchAny(patterns []string, room string) bool {
	if patterns == nil {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, room); ok { // patterns were checked by identityFrom
			return true
		}
	}
	return false
}

// identityFrom reads the identity out of verified claims.
func identityFrom(c jwt.MapClaims) (Identity, error) {
	sub, _ := c["sub"].(string)
	if sub == "" {
		return Identity{}, fmt.Errorf("token has no sub")
	}
	user, err := NormalizeUser(sub)
	if err != nil {
		return Identity{}, fmt.Errorf("token sub: %w", err)
	}
	id := Identity{User: user, Claims: map[string]any(c), Meta: map[string]string{}}
	if exp, err := c.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	if v, ok := c[ClaimName]; ok {
		s, isString := v.(string)
		if !isString {
			return Identity{}, fmt.Errorf("token name is not a string")
		}
		if s != "" {
			if id.Name, err = NormalizeDisplayName(s); err != nil {
				return Identity{}, fmt.Errorf("token name: %w", err)
			}
		}
	}
	if id.Rooms, err = patterns(c, ClaimRooms); err != nil {
		return Identity{}, err
	}
	// publish: null is the same as no publish claim (as rooms), never
	// every room: a token server that marshals a nil list writes null.
	if v, ok := c[ClaimPublish]; ok && v != nil {
		if id.Publish, err = patterns(c, ClaimPublish); err != nil {
			return Identity{}, err
		}
	} else {
		id.Publish = id.Rooms
	}
	for k, v := range c {
		if s, ok := v.(string); ok && !registered[k] {
			id.Meta[MetaClaimPrefix+k] = s
		}
	}
	return id, nil
}

// patterns reads a claim of room patterns: a list of strings, or one
// string of comma-separated patterns. Absent, it is nil (every room);
// present and empty, no room. A null claim is refused: absent grants every
// room, so null must not be read as absent, and the issuer may have meant
// no room.
func patterns(c jwt.MapClaims, claim string) ([]string, error) {
	v, ok := c[claim]
	if !ok {
		return nil, nil
	}
	if v == nil {
		return nil, fmt.Errorf("token claim %s is null; omit it or give a list", claim)
	}
	var list []string
	switch t := v.(type) {
	case string:
		for p := range strings.SplitSeq(t, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
	case []any:
		for _, e := range t {
			s, isString := e.(string)
			if !isString {
				return nil, fmt.Errorf("token %s: %v is not a string", claim, e)
			}
			list = append(list, s)
		}
	default:
		return nil, fmt.Errorf("token %s is not a list of room patterns", claim)
	}
	if len(list) > MaxPatterns {
		return nil, fmt.Errorf("token %s has %d patterns; at most %d are allowed", claim, len(list), MaxPatterns)
	}
	if err := CheckPatterns(list); err != nil {
		return nil, fmt.Errorf("token %s: %w", claim, err)
	}
	if list == nil {
		list = []string{}
	}
	return list, nil
}

// CheckPatterns reports a room pattern that is not a valid glob: * matches
// any run of room characters, ? one, [a-z] a class.
func CheckPatterns(list []string) error {
	for _, p := range list {
		if p == "" {
			return fmt.Errorf("empty room pattern")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("room pattern %q: %w", p, err)
		}
	}
	return nil
}
