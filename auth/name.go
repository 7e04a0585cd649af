package auth

import "github.com/chatstream/chatstream/internal/names"

// Limits of names.
const (
	// MaxUserLen is the longest user name, in characters (code points)
	// after normalisation; it is the protocol's (pipeline.MaxUserLen).
	MaxUserLen = 32
	// MaxDisplayNameLen is the longest display name (a token's name
	// claim), in characters after normalisation.
	MaxDisplayNameLen = 64
)

// ErrBadName reports a user or display name the name rules refuse; the
// error's text says why.
var ErrBadName = names.ErrBad

// NormalizeUser applies the name rules to a user name (the ?user= of
// --auth none, a token's sub) and returns it normalised. The error wraps
// ErrBadName and says why.
func NormalizeUser(name string) (string, error) {
	return names.Normalize("user name", name, MaxUserLen)
}

// NormalizeDisplayName applies the name rules to a display name (a token's
// name claim) and returns it normalised. The error wraps ErrBadName and
// says why.
func NormalizeDisplayName(name string) (string, error) {
	return names.Normalize("display name", name, MaxDisplayNameLen)
}
