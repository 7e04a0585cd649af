package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// ErrForbidden reports a join or send that the identity's rooms or publish
// patterns, or the rooms policy, do not allow; the error's text says which.
var ErrForbidden = errors.New("forbidden")

// Action is what an identity wants to do in a room.
type Action int

// Actions checked by Allow.
const (
	// Join is joining a room and reading its history.
	Join Action = iota
	// Send is sending a message to a room.
	Send
)

// String returns "join" or "send".
func (a Action) String() string {
	if a == Send {
		return "send"
	}
	return "join"
}

// Authenticator is a server's authentication: its mode, its verifier (in
// ModeJWT) and its rooms policy. It is safe for concurrent use. A nil
// *Authenticator is ModeNone without a policy.
type Authenticator struct {
	mode     string
	verifier *Verifier
	// policy is the rooms policy in force (nil: none), read from
	// policyFile and replaced by ReloadPolicy; reloadMu serialises
	// reloads, so the file read last is the one in force.
	policy     atomic.Pointer[Policy]
	policyFile string
	reloadMu   sync.Mutex
	log        *slog.Logger
}

// New returns the authenticator of cfg: it reads the key (or starts
// fetching the JWKS) and the rooms policy. In ModeNone it logs a warning
// that anyone can use any name. Close stops it.
func New(cfg Config) (*Authenticator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{mode: cfg.Mode, log: cfg.Logger, policyFile: cfg.RoomsPolicy}
	if err := a.ReloadPolicy(); err != nil {
		return nil, err
	}
	switch cfg.Mode {
	case ModeJWT:
		v, err := NewVerifier(cfg)
		if err != nil {
			return nil, err
		}
		a.verifier = v
	default:
		cfg.Logger.Warn("auth: --auth none: anyone can use any name; run with --auth jwt in front of real users")
	}
	return a, nil
}

// ReloadPolicy reads the rooms policy file again and puts it in force for
// every later join and send. When the file cannot be read or is invalid it
// returns the error (naming the file and line) and the policy in force
// stays. Without a policy file it does nothing.
func (a *Authenticator) ReloadPolicy() error {
	if a == nil || a.policyFile == "" {
		return nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	p, err := LoadPolicy(a.policyFile, a.log)
	if err != nil {
		return err
	}
	a.policy.Store(p)
	return nil
}

// Mode returns ModeNone or ModeJWT.
func (a *Authenticator) Mode() string {
	if a == nil {
		return ModeNone
	}
	return a.mode
}

// Close stops the verifier's key fetches.
func (a *Authenticator) Close() {
	if a != nil && a.verifier != nil {
		a.verifier.Close()
	}
}

// Anonymous returns the identity of a ModeNone connection named user
// (?user=), after the name rules. Its error wraps ErrBadName.
func (a *Authenticator) Anonymous(user string) (Identity, error) {
	u, err := NormalizeUser(user)
	if err != nil {
		return Identity{}, err
	}
	return Identity{User: u}, nil
}

// Verify returns the identity a token carries (ModeJWT). Its error wraps
// ErrUnauthorized and never contains the token.
func (a *Authenticator) Verify(token string) (Identity, error) {
	if a == nil || a.verifier == nil {
		return Identity{}, fmt.Errorf("%w: this server does not use tokens", ErrUnauthorized)
	}
	return a.verifier.Verify(token)
}

// VerifyContext is Verify, but a token whose kid the JWKS does not hold
// stops waiting for the set to be fetched again when ctx ends.
func (a *Authenticator) VerifyContext(ctx context.Context, token string) (Identity, error) {
	if a == nil || a.verifier == nil {
		return Identity{}, fmt.Errorf("%w: this server does not use tokens", ErrUnauthorized)
	}
	return a.verifier.VerifyContext(ctx, token)
}

// Allow reports whether id may do act in room: its own patterns first,
// then the rooms policy. The error wraps ErrForbidden and says why.
func (a *Authenticator) Allow(id Identity, room string, act Action) error {
	ok := id.CanJoin(room)
	if act == Send {
		ok = id.CanPublish(room)
	}
	if !ok {
		if act == Send {
			return fmt.Errorf("%w: your token does not allow sending to room %s", ErrForbidden, room)
		}
		return fmt.Errorf("%w: your token does not allow joining room %s", ErrForbidden, room)
	}
	if a == nil {
		return nil
	}
	p := a.policy.Load()
	if p == nil {
		return nil
	}
	return p.Allow(id, room, act)
}
