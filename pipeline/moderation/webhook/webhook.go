// Package webhook is the webhook moderator: it POSTs each message as JSON
// to a URL and applies the answer.
//
// Configuration (kind "webhook"):
//
//	moderators:
//	  - kind: webhook
//	    url: https://moderation.internal/check
//	    timeout: 2s             # per request (default 2s)
//	    headers: {Authorization: "Bearer ${MODERATION_TOKEN}"}  # ${VAR} from the environment
//	    on_error: reject        # reject (fail closed, default) or accept (fail open)
//
// The request body is a [Request]; the answer a [Response] with status 2xx
// (204 No Content accepts). A timeout, a connection error, another status
// or an answer that cannot be read is an error: the chain then applies the
// entry's on_error policy — fail closed rejects with "moderation
// unavailable", fail open accepts.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/chatstream/chatstream/pipeline/moderation"
)

// Kind is the configuration kind of the webhook moderator.
const Kind = "webhook"

func init() {
	moderation.Register(Kind, moderation.Configured(func(spec moderation.Spec, env moderation.Env, cfg Config) (*Webhook, error) {
		cfg.Client = env.HTTPClient
		cfg.DryRun = env.DryRun
		cfg.Name = spec.Name
		return New(cfg)
	}))
}

// MaxResponseBytes bounds the answer read from the webhook.
const MaxResponseBytes = 64 << 10

// Config configures a Webhook. A zero field takes the default in its
// comment.
type Config struct {
	// URL receives the POSTs (http or https). Required.
	URL string `yaml:"url"`
	// Timeout bounds one request, answer included. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Headers are added to each request; ${VAR} in a value is replaced by
	// the environment variable VAR, so secrets stay out of the file.
	Headers map[string]string `yaml:"headers"`
	// Client sends the requests. Default: a client of its own.
	Client *http.Client `yaml:"-"`
	// Name is the moderator's name, sent in each request.
	Name string `yaml:"-"`
	// DryRun is sent in each request, so the service can tell replays
	// from live traffic.
	DryRun bool `yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{}
	}
}

// Validate reports a configuration that cannot work. It does not change c.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("url is required")
	case err != nil:
		return fmt.Errorf("url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("url %q is not an http(s) URL", c.URL)
	case c.Timeout < 0:
		return errors.New("timeout must not be negative")
	}
	return nil
}

// Request is the JSON body POSTed for each message.
type Request struct {
	// ID is the message's UUID.
	ID string `json:"id"`
	// Room is where the message goes.
	Room string `json:"room"`
	// User is the sender.
	User string `json:"user"`
	// ConnID is the sender's connection.
	ConnID string `json:"conn_id"`
	// Text is the text to moderate (after earlier moderators' rewrites).
	Text string `json:"text"`
	// Time is when the message is moderated (its recorded time in a dry
	// run).
	Time time.Time `json:"time"`
	// Metadata is every metadata field of the message.
	Metadata map[string]string `json:"metadata"`
	// Moderator is the entry's name in the chain.
	Moderator string `json:"moderator"`
	// DryRun is true when recorded traffic is replayed.
	DryRun bool `json:"dry_run"`
}

// Response is the webhook's answer.
type Response struct {
	// Action is "accept", "reject" or "rewrite".
	Action string `json:"action"`
	// Reason is shown to the sender of a rejected message.
	Reason string `json:"reason,omitempty"`
	// Text is the new text of a rewrite.
	Text string `json:"text,omitempty"`
	// Note describes a rewrite (stored in the message's metadata).
	Note string `json:"note,omitempty"`
}

// Webhook is the webhook moderator. It is safe for concurrent use.
type Webhook struct {
	cfg     Config
	headers http.Header
}

var _ moderation.Moderator = (*Webhook)(nil)

// New builds a webhook moderator; header values are expanded from the
// environment here, once.
func New(cfg Config) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	cfg.setDefaults()
	h := http.Header{}
	for k, v := range cfg.Headers {
		h.Set(k, os.ExpandEnv(v))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	return &Webhook{cfg: cfg, headers: h}, nil
}

// Describe summarises the settings (header values are secrets and left out).
func (w *Webhook) Describe() string {
	return fmt.Sprintf("url=%s timeout=%s", w.cfg.URL, w.cfg.Timeout)
}

// ErrBadAnswer reports an answer the moderator cannot apply.
var ErrBadAnswer = errors.New("bad webhook answer")

// Moderate POSTs m and applies the answer.
func (w *Webhook) Moderate(ctx context.Context, m *moderation.Message) (moderation.Decision, error) {
	body, err := json.Marshal(Request{
		ID: m.ID, Room: m.Room, User: m.User, ConnID: m.ConnID, Text: m.Text, Time: m.Time.UTC(),
		Metadata: m.Metadata, Moderator: w.cfg.Name, DryRun: w.cfg.DryRun,
	})
	if err != nil {
		return moderation.Decision{}, fmt.Errorf("webhook: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return moderation.Decision{}, fmt.Errorf("webhook: %w", err)
	}
	req.Header = w.headers.Clone()
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return moderation.Decision{}, fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return moderation.Accepted(), nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return moderation.Decision{}, fmt.Errorf("webhook: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return moderation.Decision{}, fmt.Errorf("webhook: %w: status %s", ErrBadAnswer, resp.Status)
	}
	if len(data) > MaxResponseBytes {
		return moderation.Decision{}, fmt.Errorf("webhook: %w: longer than %d bytes", ErrBadAnswer, MaxResponseBytes)
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return moderation.Decision{}, fmt.Errorf("webhook: %w: %w", ErrBadAnswer, err)
	}
	switch r.Action {
	case "accept":
		return moderation.Accepted(), nil
	case "reject":
		return moderation.Rejected(r.Reason), nil
	case "rewrite":
		if r.Text == "" {
			return moderation.Decision{}, fmt.Errorf("webhook: %w: rewrite without text", ErrBadAnswer)
		}
		return moderation.Rewritten(r.Text, r.Note), nil
	}
	return moderation.Decision{}, fmt.Errorf("webhook: %w: action %q", ErrBadAnswer, r.Action)
}
