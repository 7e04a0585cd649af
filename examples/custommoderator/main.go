// Command custommoderator is a chatstream server with a moderator kind of
// its own, "mute", next to the built-in ones: the way to extend moderation
// in Go. It registers the kind from an init function, so a configuration
// file can name it:
//
//	moderators:
//	  - kind: mute
//	    users: [mallory]
//	    reason: you are muted here
//	  - kind: wordlist
//	    words: [darn]
//
// Everything else is chatstream itself: main hands the command line to
// cli.Main, so the binary has every command and flag of chatstream:
//
//	go run ./examples/custommoderator serve --moderation moderation.yaml
//	go run ./examples/custommoderator moderation check moderation.yaml
package main

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/chatstream/chatstream/cli"
	"github.com/chatstream/chatstream/pipeline/moderation"
)

// MuteKind is the configuration kind of the mute moderator.
const MuteKind = "mute"

func init() {
	// Like a database/sql driver: registering makes the kind available to
	// every configuration file this binary loads.
	moderation.Register(MuteKind, newMute)
}

// MuteConfig is the mute moderator's part of a configuration entry.
type MuteConfig struct {
	// Users are the muted users. Required.
	Users []string `yaml:"users"`
	// Reason is shown to a muted user. Default "you are muted".
	Reason string `yaml:"reason"`
}

// Mute rejects every message of the muted users. It is safe for concurrent
// use (it never changes after it is built).
type Mute struct {
	users  []string
	reason string
}

// newMute is the kind's factory: it decodes the entry's settings (unknown
// fields are errors with their line) and checks them.
func newMute(spec moderation.Spec, _ moderation.Env) (moderation.Moderator, error) {
	var cfg MuteConfig
	if err := spec.Decode(&cfg); err != nil {
		return nil, err
	}
	if len(cfg.Users) == 0 {
		return nil, spec.Errorf("users", "give at least one user to mute")
	}
	if cfg.Reason == "" {
		cfg.Reason = "you are muted"
	}
	return &Mute{users: cfg.Users, reason: cfg.Reason}, nil
}

// Moderate rejects m when its sender is muted.
func (m *Mute) Moderate(_ context.Context, msg *moderation.Message) (moderation.Decision, error) {
	if slices.Contains(m.users, msg.User) {
		return moderation.Rejected(m.reason), nil
	}
	return moderation.Accepted(), nil
}

// Describe summarises the settings for `chatstream moderation check`-like
// output.
func (m *Mute) Describe() string { return fmt.Sprintf("users=%v", m.users) }

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}

// Compile-time check that Mute is a moderator.
var _ moderation.Moderator = (*Mute)(nil)
