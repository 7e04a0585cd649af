package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// user is one line of the users file.
type user struct {
	name  string   // the token's sub: the chat user name
	hash  []byte   // bcrypt hash of the password
	title string   // the token's name: shown in the page; empty: name
	rooms []string // the token's rooms: patterns the user may join; nil: every room
}

// users are the accounts of the users file.
type users struct {
	byName map[string]user
	// dummy returns a hash of the first account's cost, compared against
	// for an unknown user, so that a sign-in takes as long whether or not
	// the user exists. It is made on first use.
	dummy func() []byte
}

// loadUsers reads a users file: one account per line,
//
//	user:bcrypt-hash[:display name[:room,patterns]]
//
// as `htpasswd -nbB user password` prints the first two fields. Blank
// lines and lines starting with # are skipped.
func loadUsers(file string) (users, error) {
	f, err := os.Open(file)
	if err != nil {
		return users{}, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	us := users{byName: map[string]user{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 2 || len(fields) > 4 || fields[0] == "" {
			return users{}, fmt.Errorf("%s:%d: want user:bcrypt-hash[:display name[:rooms]], got %d fields", file, n, len(fields))
		}
		u := user{name: fields[0], hash: []byte(fields[1])}
		cost, err := bcrypt.Cost(u.hash)
		if err != nil {
			return users{}, fmt.Errorf("%s:%d: user %s: the password is not a bcrypt hash (make one with `htpasswd -nbB user password`): %w", file, n, u.name, err)
		}
		if us.dummy == nil {
			us.dummy = sync.OnceValue(func() []byte {
				h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), cost) // cost is valid: it was read from a hash
				return h
			})
		}
		if len(fields) > 2 {
			u.title = fields[2]
		}
		if len(fields) > 3 && fields[3] != "" {
			u.rooms = strings.Split(fields[3], ",")
		}
		if _, dup := us.byName[u.name]; dup {
			return users{}, fmt.Errorf("%s:%d: user %s is listed twice", file, n, u.name)
		}
		us.byName[u.name] = u
	}
	if err := sc.Err(); err != nil {
		return users{}, fmt.Errorf("users file: %w", err)
	}
	if len(us.byName) == 0 {
		return users{}, fmt.Errorf("%s: no users", file)
	}
	return us, nil
}

// count returns the number of accounts.
func (us users) count() int { return len(us.byName) }

// check returns the user whose password this is, or false.
func (us users) check(name, password string) (user, bool) {
	u, ok := us.byName[name]
	hash := u.hash
	if !ok {
		hash = us.dummy()
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(password)); err != nil || !ok {
		return user{}, false
	}
	return u, true
}
