package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// errTooManySessions refuses a sign-in while the session table is full.
var errTooManySessions = errors.New("too many sessions")

// sessions maps session ids (the cookie's value) to user names, in memory:
// a restart signs everybody out. At most max sessions are kept; expired
// ones are dropped when a new one would not fit.
type sessions struct {
	ttl time.Duration
	max int

	// mu guards byID.
	mu   sync.Mutex
	byID map[string]session
}

type session struct {
	user    string
	expires time.Time
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{ttl: ttl, max: max, byID: make(map[string]session)}
}

// create starts a session for user and returns its id: 32 random bytes,
// base64url.
func (s *sessions) create(user string, now time.Time) (string, error) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	id := base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		for k, v := range s.byID {
			if !now.Before(v.expires) {
				delete(s.byID, k)
			}
		}
		if len(s.byID) >= s.max {
			return "", errTooManySessions
		}
	}
	s.byID[id] = session{user: user, expires: now.Add(s.ttl)}
	return id, nil
}

// user returns the user of a live session.
func (s *sessions) user(id string, now time.Time) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[id]
	if ok && !now.Before(v.expires) {
		delete(s.byID, id)
		ok = false
	}
	return v.user, ok
}

// end ends a session.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}
