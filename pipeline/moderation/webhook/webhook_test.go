package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chatstream/chatstream/pipeline/moderation"
	"github.com/chatstream/chatstream/pipeline/moderation/webhook"
)

// server starts a real HTTP server that answers with handler.
func server(t *testing.T, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(handler)
	t.Cleanup(s.Close)
	return s
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body) // the test reads what arrives
	}
}

func message() moderation.Message {
	return moderation.Message{
		ID: "m1", Room: "lobby", User: "alice", ConnID: "c1", Text: "hello",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Metadata: map[string]string{"ref": "r1"},
	}
}

// chain puts a webhook moderator for url in a chain with the policy.
func chain(t *testing.T, url string, timeout time.Duration, onError moderation.Action) *moderation.Chain {
	t.Helper()
	w, err := webhook.New(webhook.Config{URL: url, Timeout: timeout, Name: "hook"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := moderation.NewChain(slog.New(slog.DiscardHandler), moderation.Entry{Name: "hook", Kind: webhook.Kind, Moderator: w, OnError: onError})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		onError moderation.Action
		action  moderation.Action
		reason  string
		text    string
		errors  int64
	}{
		{"accept", answer(200, `{"action":"accept"}`), moderation.Reject, moderation.Accept, "", "hello", 0},
		{"no content accepts", answer(204, ``), moderation.Reject, moderation.Accept, "", "hello", 0},
		{"reject", answer(200, `{"action":"reject","reason":"not today"}`), moderation.Reject, moderation.Reject, "not today", "hello", 0},
		{"reject without reason", answer(200, `{"action":"reject"}`), moderation.Reject, moderation.Reject, moderation.DefaultReason, "hello", 0},
		{"rewrite", answer(200, `{"action":"rewrite","text":"hi","note":"shorter"}`), moderation.Reject, moderation.Rewrite, "", "hi", 0},
		{"rewrite without text fails closed", answer(200, `{"action":"rewrite"}`), moderation.Reject, moderation.Reject, moderation.ReasonUnavailable, "hello", 1},
		{"unknown action fails open", answer(200, `{"action":"maybe"}`), moderation.Accept, moderation.Accept, "", "hello", 1},
		{"server error fails closed", answer(500, `oops`), moderation.Reject, moderation.Reject, moderation.ReasonUnavailable, "hello", 1},
		{"bad json fails open", answer(200, `{`), moderation.Accept, moderation.Accept, "", "hello", 1},
		{"rewrite to invalid text fails closed", answer(200, `{"action":"rewrite","text":"a\u0000b"}`), moderation.Reject, moderation.Reject, moderation.ReasonUnavailable, "hello", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := server(t, tt.handler)
			c := chain(t, s.URL, time.Second, tt.onError)
			res := c.Evaluate(context.Background(), message())
			if res.Action != tt.action || res.Reason != tt.reason || res.Text != tt.text {
				t.Fatalf("got %v reason %q text %q, want %v reason %q text %q", res.Action, res.Reason, res.Text, tt.action, tt.reason, tt.text)
			}
			if got := c.Stats()["hook"].Errors; got != tt.errors {
				t.Errorf("errors = %d, want %d", got, tt.errors)
			}
		})
	}
}

// TestTimeout: a webhook slower than the timeout is an error: fail closed
// rejects with "moderation unavailable", fail open accepts; neither waits
// for the slow answer.
func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		answer(200, `{"action":"accept"}`)(w, r)
	})
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name    string
		onError moderation.Action
		want    moderation.Action
		reason  string
	}{
		{"fail closed", moderation.Reject, moderation.Reject, moderation.ReasonUnavailable},
		{"fail open", moderation.Accept, moderation.Accept, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := chain(t, s.URL, 100*time.Millisecond, tt.onError)
			start := time.Now()
			res := c.Evaluate(context.Background(), message())
			took := time.Since(start)
			if res.Action != tt.want || res.Reason != tt.reason {
				t.Fatalf("got %v %q, want %v %q", res.Action, res.Reason, tt.want, tt.reason)
			}
			if took > 2*time.Second {
				t.Fatalf("took %s; the timeout is 100ms", took)
			}
			if st := c.Stats()["hook"]; st.Errors != 1 {
				t.Fatalf("stats = %+v, want 1 error", st)
			}
		})
	}
}

// TestRequest: the webhook receives the message as JSON with the
// configured headers, environment variables expanded.
func TestRequest(t *testing.T) {
	t.Setenv("HOOK_TOKEN", "s3cret")
	got := make(chan *http.Request, 1)
	bodies := make(chan webhook.Request, 1)
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		var req webhook.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		got <- r
		bodies <- req
		answer(200, `{"action":"accept"}`)(w, r)
	})
	w, err := webhook.New(webhook.Config{URL: s.URL + "/check", Headers: map[string]string{"Authorization": "Bearer ${HOOK_TOKEN}"}, Name: "hook", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	if _, err := w.Moderate(context.Background(), &m); err != nil {
		t.Fatal(err)
	}
	r, body := <-got, <-bodies
	if r.Method != http.MethodPost || r.URL.Path != "/check" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if a := r.Header.Get("Authorization"); a != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want Bearer s3cret", a)
	}
	want := webhook.Request{ID: "m1", Room: "lobby", User: "alice", ConnID: "c1", Text: "hello", Time: m.Time, Metadata: map[string]string{"ref": "r1"}, Moderator: "hook", DryRun: true}
	if body.ID != want.ID || body.Room != want.Room || body.User != want.User || body.ConnID != want.ConnID || body.Text != want.Text ||
		!body.Time.Equal(want.Time) || body.Metadata["ref"] != "r1" || body.Moderator != "hook" || !body.DryRun {
		t.Errorf("body = %+v, want %+v", body, want)
	}
}

func TestValidate(t *testing.T) {
	for name, cfg := range map[string]webhook.Config{
		"no url":        {},
		"not http":      {URL: "ftp://x"},
		"relative":      {URL: "/check"},
		"negative time": {URL: "http://x", Timeout: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}
