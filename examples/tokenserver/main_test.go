package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// writeFile writes content to a new file in t's temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func hash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// startServer starts a token server for alice (password "wonderland",
// display name and rooms) and bob (no display name, every room).
func startServer(t *testing.T) (*httptest.Server, Config) {
	t.Helper()
	users := "# test accounts\n\n" +
		"alice:" + hash(t, "wonderland") + ":Alice Liddell:lobby,team-*\n" +
		"bob:" + hash(t, "builder") + "\n"
	cfg := Config{
		UsersFile:  writeFile(t, "users.txt", users),
		SecretFile: writeFile(t, "secret", testSecret+"\n"),
		TokenTTL:   10 * time.Minute,
		Issuer:     "https://chat.example",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs, cfg
}

// newClient returns a client with a cookie jar that does not follow
// redirects.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func signIn(t *testing.T, c *http.Client, base, user, password, next string) *http.Response {
	t.Helper()
	res, err := c.PostForm(base+"/auth/login", url.Values{"user": {user}, "password": {password}, "next": {next}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// fetchToken posts to the token endpoint and returns the status and body.
func fetchToken(t *testing.T, c *http.Client, base string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/auth/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, body
}

func TestSignInAndToken(t *testing.T) {
	t.Parallel()
	hs, cfg := startServer(t)
	c := newClient(t)

	res := signIn(t, c, hs.URL, "alice", "wonderland", "/#/lobby")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/#/lobby" {
		t.Fatalf("sign-in: got %d to %q, want 303 to /#/lobby", res.StatusCode, res.Header.Get("Location"))
	}
	cookies := res.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: got %v, want one session cookie", cookies)
	}
	if ck := cookies[0]; !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/auth/" {
		t.Errorf("session cookie: got %+v, want HttpOnly, SameSite=Lax, Path=/auth/", ck)
	}

	before := time.Now()
	status, body := fetchToken(t, c, hs.URL, http.Header{"Origin": {hs.URL}})
	if status != http.StatusOK {
		t.Fatalf("token: got %d %s, want 200", status, body)
	}
	var reply struct {
		Token string    `json:"token"`
		Exp   time.Time `json:"exp"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		t.Fatalf("token reply %s: %v", body, err)
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(reply.Token, claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuer(cfg.Issuer))
	if err != nil {
		t.Fatalf("the token does not verify with the secret: %v", err)
	}
	if claims["sub"] != "alice" || claims["name"] != "Alice Liddell" {
		t.Errorf("sub, name: got %v, %v, want alice, Alice Liddell", claims["sub"], claims["name"])
	}
	rooms, _ := claims["rooms"].([]any)
	if !slices.Equal(rooms, []any{"lobby", "team-*"}) {
		t.Errorf("rooms: got %v, want [lobby team-*]", claims["rooms"])
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp.Before(before.Add(cfg.TokenTTL-time.Second)) || exp.After(time.Now().Add(cfg.TokenTTL+time.Second)) {
		t.Errorf("exp: got %v (%v), want about now + %s", exp, err, cfg.TokenTTL)
	}
	if !reply.Exp.Equal(exp.Time) {
		t.Errorf("reply exp: got %v, want the token's %v", reply.Exp, exp.Time)
	}

	// bob has no display name and no rooms: neither claim is set.
	c2 := newClient(t)
	signIn(t, c2, hs.URL, "bob", "builder", "")
	status, body = fetchToken(t, c2, hs.URL, nil)
	if status != http.StatusOK {
		t.Fatalf("bob's token: got %d %s", status, body)
	}
	_ = json.Unmarshal(body, &reply)
	claims = jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(reply.Token, claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil }); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims["name"]; ok {
		t.Errorf("bob's name claim: got %v, want none", claims["name"])
	}
	if _, ok := claims["rooms"]; ok {
		t.Errorf("bob's rooms claim: got %v, want none (every room)", claims["rooms"])
	}

	// Signing out ends the session.
	res, err = c.Post(hs.URL+"/auth/logout", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if status, _ := fetchToken(t, c, hs.URL, nil); status != http.StatusUnauthorized {
		t.Errorf("token after sign-out: got %d, want 401", status)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	hs, _ := startServer(t)

	cases := []struct {
		name, user, password string
	}{
		{"bad password", "alice", "looking-glass"},
		{"unknown user", "mallory", "wonderland"},
		{"empty password", "alice", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t)
			res := signIn(t, c, hs.URL, tc.user, tc.password, "/")
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("sign-in: got %d, want 401", res.StatusCode)
			}
			if len(res.Cookies()) != 0 {
				t.Errorf("cookies: got %v, want none", res.Cookies())
			}
			if status, body := fetchToken(t, c, hs.URL, nil); status != http.StatusUnauthorized || !strings.Contains(string(body), "not signed in") {
				t.Errorf("token: got %d %s, want 401 not signed in", status, body)
			}
		})
	}

	t.Run("token without a session", func(t *testing.T) {
		if status, _ := fetchToken(t, newClient(t), hs.URL, nil); status != http.StatusUnauthorized {
			t.Errorf("got %d, want 401", status)
		}
	})
	t.Run("token with a made-up session", func(t *testing.T) {
		h := http.Header{"Cookie": {CookieName + "=made-up"}}
		if status, _ := fetchToken(t, newClient(t), hs.URL, h); status != http.StatusUnauthorized {
			t.Errorf("got %d, want 401", status)
		}
	})
	t.Run("token asked from another site", func(t *testing.T) {
		c := newClient(t)
		signIn(t, c, hs.URL, "alice", "wonderland", "/")
		status, body := fetchToken(t, c, hs.URL, http.Header{"Origin": {"https://evil.example"}})
		if status != http.StatusForbidden {
			t.Errorf("got %d %s, want 403", status, body)
		}
	})
	t.Run("token by GET", func(t *testing.T) {
		res, err := newClient(t).Get(hs.URL + "/auth/token")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("got %d, want 405", res.StatusCode)
		}
	})
}

func TestSignInRedirectsOnlyHere(t *testing.T) {
	t.Parallel()
	hs, _ := startServer(t)
	cases := map[string]string{
		"":                        "/",
		"/":                       "/",
		"/#/team-a":               "/#/team-a",
		"//evil.example/":         "/",
		"https://evil.example/":   "/",
		`/\evil.example`:          "/",
		"javascript:alert(1)":     "/",
		"relative/path":           "/",
		"/chat?room=lobby#/lobby": "/chat?room=lobby#/lobby",
	}
	for next, want := range cases {
		res := signIn(t, newClient(t), hs.URL, "alice", "wonderland", next)
		if got := res.Header.Get("Location"); res.StatusCode != http.StatusSeeOther || got != want {
			t.Errorf("next %q: got %d to %q, want 303 to %q", next, res.StatusCode, got, want)
		}
	}
}

func TestLoginForm(t *testing.T) {
	t.Parallel()
	hs, _ := startServer(t)
	res, err := http.Get(hs.URL + "/auth/login?next=" + url.QueryEscape("/#/lobby"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `name="next" value="/#/lobby"`) || !strings.Contains(string(body), `type="password"`) {
		t.Errorf("form: got %d\n%s", res.StatusCode, body)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	good := "alice:" + hash(t, "pw") + "\n"
	cases := []struct {
		name, users, secret, want string
	}{
		{"short secret", good, "short\n", "at least 32"},
		{"not a hash", "alice:plaintext\n", testSecret, "users.txt:1: user alice: the password is not a bcrypt hash"},
		{"too many fields", "# c\nalice:" + hash(t, "pw") + ":A:lobby:extra\n", testSecret, "users.txt:2: want user:bcrypt-hash"},
		{"twice", good + good, testSecret, "users.txt:2: user alice is listed twice"},
		{"empty", "# nobody\n", testSecret, "no users"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{UsersFile: writeFile(t, "users.txt", tc.users), SecretFile: writeFile(t, "secret", tc.secret)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{SecretFile: "x"}); err == nil || !strings.Contains(err.Error(), "--users") {
		t.Errorf("no users file: got %v, want it named", err)
	}
}

// TestHtpasswdHash checks that a hash in the form `htpasswd -nbB` writes
// ($2y$, the same algorithm as Go's $2a$) signs in.
func TestHtpasswdHash(t *testing.T) {
	t.Parallel()
	h := hash(t, "secret")
	y, ok := strings.CutPrefix(h, "$2a$")
	if !ok {
		t.Fatalf("bcrypt hash %q: want the $2a$ prefix", h)
	}
	us, err := loadUsers(writeFile(t, "users.txt", "carol:$2y$"+y+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := us.check("carol", "secret"); !ok {
		t.Error("a $2y$ hash of the password: refused, want signed in")
	}
	if _, ok := us.check("carol", "Secret"); ok {
		t.Error("a wrong password: signed in, want refused")
	}
}

// TestDemoUsers checks the users file compose mounts: it loads, and its
// documented passwords sign in.
func TestDemoUsers(t *testing.T) {
	t.Parallel()
	us, err := loadUsers("users.txt")
	if err != nil {
		t.Fatal(err)
	}
	for name, password := range map[string]string{"alice": "wonderland", "bob": "builder"} {
		if _, ok := us.check(name, password); !ok {
			t.Errorf("%s / %s: refused, want signed in (users.txt documents it)", name, password)
		}
	}
	if u := us.byName["bob"]; !slices.Equal(u.rooms, []string{"lobby", "team-*"}) {
		t.Errorf("bob's rooms: got %v, want [lobby team-*]", u.rooms)
	}
}
