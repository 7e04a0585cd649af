// Package deploy_test checks the deployment files in this folder with the
// programs that read them: the Caddyfile with Caddy (caddy validate, and a
// real Caddy in front of real instances), prometheus.yml with promtool.
// Without caddy or promtool on PATH the tests that need them skip locally
// and fail when the CI environment variable is set (.ci/run installs the
// Debian packages caddy and prometheus).
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Files checked here, relative to this folder (the tests' working
// directory).
const (
	caddyfile  = "Caddyfile"
	promConfig = "prometheus.yml"
)

// toolWait bounds one run of caddy validate, caddy adapt or promtool.
const toolWait = 30 * time.Second

// requireTool returns the path of the program name, or skips the test
// (fails it when CI is set) when it is not installed.
func requireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; CI must provide it (Debian package %s)", name, debianPackage)
		}
		t.Skipf("%s not found (Debian package %s)", name, debianPackage)
	}
	return bin
}

// toolEnv is the environment of a caddy or promtool run: PATH, the given
// variables, and a private home and XDG directories so nothing is read
// from or written to the user's.
func toolEnv(t testing.TB, vars map[string]string) []string {
	t.Helper()
	home := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"XDG_DATA_HOME=" + filepath.Join(home, "data"),
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// runTool runs bin with args and env until it exits or toolWait passes,
// and returns its combined output and exit error.
func runTool(t testing.TB, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Error positions as the two programs write them.
var (
	// caddy 2.6: "Caddyfile:12 - Error during parsing: ..."; later
	// versions and adapt errors: "Error: Caddyfile:12: unrecognized ...".
	caddyPos = regexp.MustCompile(`(\S*Caddyfile\S*):(\d+)(?: -|:) (.*)`)
	// promtool: "  line 8: field scrape_timout not found in type ...".
	promLine = regexp.MustCompile(`^\s*line (\d+): (.*)`)
	// promtool: "  FAILED: parsing YAML file prometheus.yml: <what>".
	promFailed = regexp.MustCompile(`FAILED: (?:parsing YAML file )?\S+?: (.*)`)
)

// configErrors picks the errors out of a caddy or promtool run on file and
// returns them as "file:line: what is wrong" ("file: what is wrong" when
// the program names no line), the house form for configuration errors.
func configErrors(file, out string) []string {
	var errs []string
	for _, line := range strings.Split(out, "\n") {
		if m := caddyPos.FindStringSubmatch(line); m != nil {
			what := strings.TrimPrefix(strings.TrimSuffix(m[3], `"}`), "Error during parsing: ")
			errs = append(errs, fmt.Sprintf("%s:%s: %s", file, m[2], what))
			continue
		}
		if m := promLine.FindStringSubmatch(line); m != nil {
			errs = append(errs, fmt.Sprintf("%s:%s: %s", file, m[1], m[2]))
			continue
		}
		if m := promFailed.FindStringSubmatch(line); m != nil && !strings.HasSuffix(m[1], "unmarshal errors:") {
			errs = append(errs, fmt.Sprintf("%s: %s", file, m[1]))
		}
	}
	return errs
}

// failConfig fails t with the errors of a run on file (named from the
// repository's root), one per line, and the program's whole output.
func failConfig(t testing.TB, file, out string, err error) {
	t.Helper()
	file = "deploy/" + file
	errs := configErrors(file, out)
	if len(errs) == 0 {
		errs = []string{file + ": " + err.Error()}
	}
	t.Fatalf("%s\n(full output:\n%s)", strings.Join(errs, "\n"), out)
}

// caddyVars are the placeholders of the Caddyfile, set as compose sets
// them (compose.yaml, service caddy).
var caddyVars = map[string]string{
	"CHATSTREAM_UPSTREAMS":   "chat1:8080 chat2:8080 chat3:8080",
	"CHATSTREAM_TOKENSERVER": "tokenserver:8090",
	"CHATSTREAM_LISTEN":      ":8080",
}

// TestCaddyfileValid runs `caddy validate` on the Caddyfile with the
// placeholders as compose sets them and as the tests set them.
func TestCaddyfileValid(t *testing.T) {
	bin := requireTool(t, "caddy", "caddy")
	tests := []struct {
		name string
		vars map[string]string
	}{
		{"compose", caddyVars},
		{"test", map[string]string{
			"CHATSTREAM_UPSTREAMS":       "127.0.0.1:18081 127.0.0.1:18082",
			"CHATSTREAM_LISTEN":          ":18080",
			"CHATSTREAM_BIND":            "127.0.0.1",
			"CHATSTREAM_HEALTH_INTERVAL": "200ms",
			"CHATSTREAM_CADDY_ADMIN":     "off",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTool(t, toolEnv(t, tt.vars), bin, "validate", "--config", caddyfile, "--adapter", "caddyfile")
			if err != nil {
				failConfig(t, caddyfile, out, err)
			}
			if !strings.Contains(out, "Valid configuration") {
				t.Errorf("caddy validate: got %q, want it to say %q", out, "Valid configuration")
			}
		})
	}
}

// adapted is the part of Caddy's JSON configuration the deployment relies
// on.
type adapted struct {
	Admin struct {
		Disabled bool   `json:"disabled"`
		Listen   string `json:"listen"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			Servers map[string]struct {
				Listen []string `json:"listen"`
				Routes []struct {
					Match  []map[string]any `json:"match"`
					Handle []proxyHandler   `json:"handle"`
				} `json:"routes"`
			} `json:"servers"`
		} `json:"http"`
	} `json:"apps"`
}

// proxyHandler is Caddy's reverse_proxy handler as JSON.
type proxyHandler struct {
	Handler      string `json:"handler"`
	HealthChecks struct {
		Active struct {
			URI          string `json:"uri"`
			Interval     int64  `json:"interval"`
			ExpectStatus int    `json:"expect_status"`
		} `json:"active"`
		Passive struct {
			FailDuration int64 `json:"fail_duration"`
			MaxFails     int   `json:"max_fails"`
		} `json:"passive"`
	} `json:"health_checks"`
	LoadBalancing struct {
		SelectionPolicy struct {
			Policy string `json:"policy"`
		} `json:"selection_policy"`
		TryDuration int64 `json:"try_duration"`
		TryInterval int64 `json:"try_interval"`
	} `json:"load_balancing"`
	Upstreams []struct {
		Dial string `json:"dial"`
	} `json:"upstreams"`
	HeadersUp any `json:"headers"`
}

// TestCaddyfileShape adapts the Caddyfile to Caddy's JSON and checks what
// the deployment relies on: one site on the listen address, /auth/* to
// the token server of CHATSTREAM_TOKENSERVER and nothing else to it, every
// upstream of CHATSTREAM_UPSTREAMS (spaces split it), least_conn, active
// checks of /readyz at the placeholder's interval (5s by default), the
// passive check and retries that bridge the time until the next active
// check, and no header rewriting (Host kept, X-Forwarded-For Caddy's own).
func TestCaddyfileShape(t *testing.T) {
	bin := requireTool(t, "caddy", "caddy")
	out, err := runTool(t, toolEnv(t, caddyVars), bin, "adapt", "--config", caddyfile, "--adapter", "caddyfile")
	if err != nil {
		failConfig(t, caddyfile, out, err)
	}
	// adapt prints the JSON on stdout and its log lines, JSON too, on
	// stderr: the configuration is the line with "apps".
	var cfg adapted
	found := false
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"apps"`) {
			if err := json.Unmarshal([]byte(line), &cfg); err != nil {
				t.Fatalf("caddy adapt: %v\n%s", err, line)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("caddy adapt printed no configuration:\n%s", out)
	}
	if cfg.Admin.Disabled || cfg.Admin.Listen != "localhost:2019" {
		t.Errorf("admin: got %+v, want localhost:2019 by default (for caddy reload inside the container)", cfg.Admin)
	}
	servers := cfg.Apps.HTTP.Servers
	if len(servers) != 1 {
		t.Fatalf("servers: got %d, want 1 (no HTTP→HTTPS redirect server without a domain name)", len(servers))
	}
	for _, srv := range servers {
		if !slices.Equal(srv.Listen, []string{"0.0.0.0:8080"}) {
			t.Errorf("listen: got %v, want [0.0.0.0:8080]", srv.Listen)
		}
		if len(srv.Routes) != 2 || len(srv.Routes[1].Match) != 0 || len(srv.Routes[1].Handle) != 1 {
			t.Fatalf("routes: got %+v, want the token server's route, then one for every other host and path, with one handler", srv.Routes)
		}
		auth := srv.Routes[0]
		match, _ := json.Marshal(auth.Match)
		if string(match) != `[{"path":["/auth/*"]}]` || len(auth.Handle) != 1 || auth.Handle[0].Handler != "reverse_proxy" ||
			len(auth.Handle[0].Upstreams) != 1 || auth.Handle[0].Upstreams[0].Dial != caddyVars["CHATSTREAM_TOKENSERVER"] {
			t.Errorf("token server route: got match %s, handlers %+v, want /auth/* proxied to %s", match, auth.Handle, caddyVars["CHATSTREAM_TOKENSERVER"])
		}
		h := srv.Routes[1].Handle[0]
		if h.Handler != "reverse_proxy" {
			t.Fatalf("handler: got %q, want reverse_proxy", h.Handler)
		}
		var dials []string
		for _, u := range h.Upstreams {
			dials = append(dials, u.Dial)
		}
		if want := strings.Fields(caddyVars["CHATSTREAM_UPSTREAMS"]); !slices.Equal(dials, want) {
			t.Errorf("upstreams: got %v, want %v", dials, want)
		}
		if p := h.LoadBalancing.SelectionPolicy.Policy; p != "least_conn" {
			t.Errorf("lb policy: got %q, want least_conn", p)
		}
		if h.LoadBalancing.TryDuration <= 0 {
			t.Errorf("lb_try_duration: got %v, want retries on another instance", time.Duration(h.LoadBalancing.TryDuration))
		}
		act := h.HealthChecks.Active
		if act.URI != "/readyz" || time.Duration(act.Interval) != 5*time.Second || act.ExpectStatus != 200 {
			t.Errorf("active health check: got %+v, want /readyz every 5s expecting 200", act)
		}
		// A refused upstream must stay out longer than the pause before a
		// retry, or the retry may pick it again.
		if pas := h.HealthChecks.Passive; pas.FailDuration <= h.LoadBalancing.TryInterval || pas.MaxFails != 1 {
			t.Errorf("passive health check: got %+v, want max_fails 1 and a fail duration longer than lb_try_interval (%v)",
				pas, time.Duration(h.LoadBalancing.TryInterval))
		}
		if time.Duration(h.LoadBalancing.TryInterval) != lbTryInterval {
			t.Errorf("lb_try_interval: got %v, want %v (the tests' lbTryInterval)", time.Duration(h.LoadBalancing.TryInterval), lbTryInterval)
		}
		if h.HeadersUp != nil {
			t.Errorf("headers: got %v, want none rewritten", h.HeadersUp)
		}
	}
}

// TestPrometheusConfigValid runs `promtool check config` on prometheus.yml.
func TestPrometheusConfigValid(t *testing.T) {
	bin := requireTool(t, "promtool", "prometheus")
	out, err := runTool(t, toolEnv(t, nil), bin, "check", "config", promConfig)
	if err != nil {
		failConfig(t, promConfig, out, err)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool: got %q, want SUCCESS", out)
	}
}

// TestConfigErrorsNameFileAndLine breaks a copy of each file and checks
// that the tests report what the program found as file:line, so a broken
// edit points at its line.
func TestConfigErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name, file, bin, pkg string
		// from, to: the edit that breaks the file.
		from, to string
		args     func(path string) []string
		// want is the error's start, on the line of from.
		want string
	}{
		{
			name: "Caddyfile: unknown subdirective", file: caddyfile, bin: "caddy", pkg: "caddy",
			from: "lb_policy least_conn", to: "lb_polcy least_conn",
			args: func(p string) []string { return []string{"validate", "--config", p, "--adapter", "caddyfile"} },
			want: "unrecognized",
		},
		{
			name: "prometheus.yml: unknown field", file: promConfig, bin: "promtool", pkg: "prometheus",
			from: "scrape_timeout:", to: "scrape_timout:",
			args: func(p string) []string { return []string{"check", "config", p} },
			want: "field scrape_timout not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := requireTool(t, tt.bin, tt.pkg)
			src, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(src, []byte(tt.from))
			if i < 0 {
				t.Fatalf("%s: %q not found", tt.file, tt.from)
			}
			line := bytes.Count(src[:i], []byte("\n")) + 1
			broken := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(broken, bytes.Replace(src, []byte(tt.from), []byte(tt.to), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runTool(t, toolEnv(t, caddyVars), bin, tt.args(broken)...)
			if err == nil {
				t.Fatalf("%s accepted the broken file:\n%s", tt.bin, out)
			}
			want := fmt.Sprintf("deploy/%s:%d: %s", tt.file, line, tt.want)
			errs := configErrors("deploy/"+tt.file, out)
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, want) }) {
				t.Errorf("errors: got %q, want one starting %q\n(full output:\n%s)", errs, want, out)
			}
		})
	}
}
