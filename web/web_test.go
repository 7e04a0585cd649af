package web_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/web"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  web.Config
		bad  string // part of the error, "" when valid
	}{
		{name: "zero", cfg: web.Config{}},
		{name: "none", cfg: web.Config{Auth: web.AuthNone}},
		{name: "jwt without token URL", cfg: web.Config{Auth: web.AuthJWT}},
		{name: "jwt", cfg: web.Config{Auth: web.AuthJWT, TokenURL: "/auth/token", SignInURL: "/auth/?next=/"}},
		{name: "absolute sign-in link", cfg: web.Config{Auth: web.AuthJWT, TokenURL: "/auth/token", SignInURL: "https://id.example.com/login"}},
		{name: "unknown mode", cfg: web.Config{Auth: "oauth"}, bad: `unknown auth mode "oauth" (known: none, jwt)`},
		{name: "token URL without jwt", cfg: web.Config{TokenURL: "/auth/token"}, bad: `need auth "jwt" (--auth jwt)`},
		{name: "cross-origin token URL", cfg: web.Config{Auth: web.AuthJWT, TokenURL: "https://id.example.com/token"}, bad: "want a path that starts with /"},
		{name: "scheme-relative token URL", cfg: web.Config{Auth: web.AuthJWT, TokenURL: "//id.example.com/token"}, bad: "want a path"},
		{name: "relative token URL", cfg: web.Config{Auth: web.AuthJWT, TokenURL: "auth/token"}, bad: "want a path"},
		{name: "javascript sign-in link", cfg: web.Config{Auth: web.AuthJWT, SignInURL: "javascript:alert(1)"}, bad: "http(s) URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Fatalf("Validate: got %v, want nil", err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
				t.Fatalf("Validate: got %v, want an error containing %q", err, tc.bad)
			case tc.bad != "" && !errors.Is(err, web.ErrConfig):
				t.Fatalf("Validate: got %v, want it to wrap ErrConfig", err)
			}
			if _, herr := web.ConfigHandler(tc.cfg); (herr == nil) != (err == nil) {
				t.Fatalf("ConfigHandler: got %v, want the error of Validate (%v)", herr, err)
			}
		})
	}
}

func TestConfigHandler(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  web.Config
		want map[string]string
	}{
		{name: "zero is none", cfg: web.Config{}, want: map[string]string{"auth": "none"}},
		{
			name: "jwt",
			cfg:  web.Config{Auth: web.AuthJWT, TokenURL: "/auth/token", SignInURL: "/auth/"},
			want: map[string]string{"auth": "jwt", "tokenUrl": "/auth/token", "signInUrl": "/auth/"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := web.ConfigHandler(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, web.ConfigPath, nil))
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", cc)
			}
			var got map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("body: got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s: got %q, want %q", k, got[k], v)
				}
			}
		})
	}
}
