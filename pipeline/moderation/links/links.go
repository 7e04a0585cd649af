// Package links is the links moderator: it rejects messages with links to
// denied domains, to domains outside an allow list, or with too many links.
// Links are http(s) URLs and bare domains such as example.com/path (see
// textnorm.Links); a domain covers its subdomains.
//
// Configuration (kind "links"):
//
//	moderators:
//	  - kind: links
//	    allow: [example.com, docs.example.org]  # if set, only these domains
//	    deny: [bit.ly, evil.example]            # never these ("*": no links at all)
//	    max_links: 3                            # default 0: no limit
package links

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/textnorm"
)

// Kind is the configuration kind of the links moderator.
const Kind = "links"

func init() {
	moderation.Register(Kind, moderation.Configured(func(_ moderation.Spec, _ moderation.Env, cfg Config) (*Links, error) {
		return New(cfg)
	}))
}

// Config configures a Links moderator. At least one field is required.
type Config struct {
	// Allow, when not empty, lists the only domains links may point to
	// (with their subdomains).
	Allow []string `yaml:"allow"`
	// Deny lists domains links must not point to (with their subdomains);
	// "*" denies every link.
	Deny []string `yaml:"deny"`
	// MaxLinks is the most links a message may have. Default 0: no limit.
	MaxLinks int `yaml:"max_links"`
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	if len(c.Allow) == 0 && len(c.Deny) == 0 && c.MaxLinks == 0 {
		return errors.New("give allow, deny or max_links")
	}
	if c.MaxLinks < 0 {
		return errors.New("max_links must not be negative")
	}
	for _, d := range append(append([]string(nil), c.Allow...), c.Deny...) {
		if d == "*" {
			continue
		}
		if d == "" || strings.ContainsAny(d, "/: ") {
			return fmt.Errorf("%q is not a domain name", d)
		}
	}
	return nil
}

// Links is the links moderator. It is safe for concurrent use.
type Links struct {
	cfg         Config
	allow, deny []string
	denyAll     bool
}

var _ moderation.Moderator = (*Links)(nil)

// New builds a links moderator.
func New(cfg Config) (*Links, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("links: %w", err)
	}
	l := &Links{cfg: cfg}
	for _, d := range cfg.Allow {
		l.allow = append(l.allow, canonical(d))
	}
	for _, d := range cfg.Deny {
		if d == "*" {
			l.denyAll = true
			continue
		}
		l.deny = append(l.deny, canonical(d))
	}
	return l, nil
}

func canonical(d string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(d)), "*."), ".")
}

// Describe summarises the settings.
func (l *Links) Describe() string {
	var parts []string
	if len(l.allow) > 0 {
		parts = append(parts, "allow="+strings.Join(l.allow, ","))
	}
	if l.denyAll {
		parts = append(parts, "deny=*")
	} else if len(l.deny) > 0 {
		parts = append(parts, "deny="+strings.Join(l.deny, ","))
	}
	if l.cfg.MaxLinks > 0 {
		parts = append(parts, fmt.Sprintf("max_links=%d", l.cfg.MaxLinks))
	}
	return strings.Join(parts, " ")
}

// Moderate rejects m when one of its links is denied or not allowed, or
// when it has more than MaxLinks links.
func (l *Links) Moderate(_ context.Context, m *moderation.Message) (moderation.Decision, error) {
	if !strings.Contains(m.Text, ".") && !strings.Contains(m.Text, "://") {
		return moderation.Accepted(), nil // no link can be written without either
	}
	found := textnorm.Links(m.Text)
	if len(found) == 0 {
		return moderation.Accepted(), nil
	}
	if l.denyAll {
		return moderation.Rejected("links are not allowed here"), nil
	}
	if l.cfg.MaxLinks > 0 && len(found) > l.cfg.MaxLinks {
		return moderation.Rejected(fmt.Sprintf("a message may have at most %d links", l.cfg.MaxLinks)), nil
	}
	for _, lk := range found {
		if matchAny(lk.Host, l.deny) {
			return moderation.Rejected(fmt.Sprintf("links to %s are not allowed here", lk.Host)), nil
		}
		if len(l.allow) > 0 && !matchAny(lk.Host, l.allow) {
			return moderation.Rejected(fmt.Sprintf("links to %s are not allowed here", lk.Host)), nil
		}
	}
	return moderation.Accepted(), nil
}

// matchAny reports whether host is one of domains or a subdomain of one.
func matchAny(host string, domains []string) bool {
	for _, d := range domains {
		if host == d || strings.HasSuffix(host, d) && host[len(host)-len(d)-1] == '.' {
			return true
		}
	}
	return false
}
