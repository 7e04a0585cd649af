package chatstream_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	chatcli "github.com/chatstream/chatstream/cli"
	"github.com/chatstream/chatstream/server"
)

// loadComposeProject loads compose.yaml from the repository root with the
// real Compose Specification loader, failing the test on any error.
func loadComposeProject(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"},
		cli.WithOsEnv,
		cli.WithWorkingDirectory("."),
		cli.WithName("chatstream"),
	)
	if err != nil {
		t.Fatalf("NewProjectOptions: %v", err)
	}
	project, err := cli.ProjectFromOptions(t.Context(), opts)
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return project
}

// service returns the named service or fails the test if it is missing.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	svc, ok := p.Services[name]
	if !ok {
		t.Fatalf("service %q missing; got services %v", name, p.ServiceNames())
	}
	return svc
}

// chatServices returns the names of the chat instances: the services built
// from the repository's root Dockerfile, sorted.
func chatServices(p *types.Project) []string {
	var names []string
	for name, svc := range p.Services {
		if svc.Build != nil && filepath.Clean(svc.Build.Dockerfile) == "Dockerfile" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// TestComposeServicesExist checks that Caddy, Redis, Prometheus, the
// three chat instances, the token server and the secret's writer are
// defined, and nothing else.
func TestComposeServicesExist(t *testing.T) {
	p := loadComposeProject(t)
	want := []string{"caddy", "chat1", "chat2", "chat3", "jwt-secret", "prometheus", "redis", "tokenserver"}
	if got := p.ServiceNames(); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("services: got %v, want %v", got, want)
	}
	if got := chatServices(p); !slices.Equal(got, []string{"chat1", "chat2", "chat3"}) {
		t.Errorf("chat instances (built from the Dockerfile): got %v, want chat1, chat2, chat3", got)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			service(t, p, name)
		})
	}
}

// TestComposeRedis checks the redis healthcheck and that AOF persistence is on.
func TestComposeRedis(t *testing.T) {
	redis := service(t, loadComposeProject(t), "redis")

	t.Run("healthcheck runs redis-cli ping", func(t *testing.T) {
		hc := redis.HealthCheck
		if hc == nil || hc.Disable {
			t.Fatalf("healthcheck: got %+v, want an enabled healthcheck", hc)
		}
		test := strings.Join(hc.Test, " ")
		if !strings.Contains(test, "redis-cli ping") {
			t.Errorf("healthcheck test: got %q, want it to run %q", test, "redis-cli ping")
		}
	})

	t.Run("command enables AOF", func(t *testing.T) {
		cmd := strings.Join(redis.Command, " ")
		if !strings.Contains(cmd, "--appendonly yes") {
			t.Errorf("command: got %q, want it to contain %q", cmd, "--appendonly yes")
		}
	})
}

// TestComposeChatServices checks dependencies, Redis URL, trusted proxies,
// healthcheck and build of every chat instance, and that none publishes a
// port (Caddy is the one address).
func TestComposeChatServices(t *testing.T) {
	p := loadComposeProject(t)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"chat1", "chat2", "chat3"} {
		t.Run(name, func(t *testing.T) {
			svc := service(t, p, name)

			t.Run("depends on healthy redis", func(t *testing.T) {
				dep, ok := svc.DependsOn["redis"]
				if !ok {
					t.Fatalf("depends_on: got %v, want redis", svc.DependsOn)
				}
				if dep.Condition != types.ServiceConditionHealthy {
					t.Errorf("depends_on redis condition: got %q, want %q",
						dep.Condition, types.ServiceConditionHealthy)
				}
			})

			t.Run("publishes no port", func(t *testing.T) {
				if len(svc.Ports) != 0 {
					t.Errorf("ports: got %+v, want none (Caddy is the one address)", svc.Ports)
				}
			})

			t.Run("trusts the compose network as proxies", func(t *testing.T) {
				got := envValue(svc, "CHATSTREAM_TRUSTED_PROXIES")
				if want := defaultSubnet(t, p); got != want {
					t.Errorf("CHATSTREAM_TRUSTED_PROXIES: got %q, want the default network's subnet %q", got, want)
				}
			})

			t.Run("healthcheck runs the binary's own probe", func(t *testing.T) {
				hc := svc.HealthCheck
				if hc == nil || hc.Disable {
					t.Fatalf("healthcheck: got %+v, want an enabled healthcheck", hc)
				}
				if test := strings.Join(hc.Test, " "); test != "CMD /chatstream healthcheck" {
					t.Errorf("healthcheck test: got %q, want %q", test, "CMD /chatstream healthcheck")
				}
			})

			t.Run("stop grace outlasts the shutdown", func(t *testing.T) {
				// Docker's SIGKILL must not come before the graceful
				// shutdown has closed every socket with 1001.
				if g := svc.StopGracePeriod; g == nil || time.Duration(*g) <= server.DefaultShutdownTimeout {
					t.Errorf("stop_grace_period: got %v, want more than the shutdown timeout %v", g, server.DefaultShutdownTimeout)
				}
			})

			t.Run("redis url", func(t *testing.T) {
				if url := envValue(svc, "CHATSTREAM_REDIS_URL"); !strings.HasPrefix(url, "redis://redis:6379") {
					t.Errorf("CHATSTREAM_REDIS_URL: got %q, want prefix %q", url, "redis://redis:6379")
				}
			})

			t.Run("builds root Dockerfile", func(t *testing.T) {
				b := svc.Build
				if b == nil {
					t.Fatal("build: got nil, want a build section")
				}
				ctx := b.Context
				if !filepath.IsAbs(ctx) {
					ctx = filepath.Join(root, ctx)
				}
				if filepath.Clean(ctx) != root {
					t.Errorf("build context: got %q, want %q", b.Context, root)
				}
				if df := filepath.Base(b.Dockerfile); df != "Dockerfile" || filepath.Dir(filepath.Join(ctx, b.Dockerfile)) != root {
					t.Errorf("build dockerfile: got %q, want %q", b.Dockerfile, "Dockerfile")
				}
			})
		})
	}
}

// envValue returns the service's environment variable, "" when unset.
func envValue(svc types.ServiceConfig, name string) string {
	if v := svc.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// defaultSubnet returns the subnet of the project's default network.
func defaultSubnet(t *testing.T, p *types.Project) string {
	t.Helper()
	n, ok := p.Networks["default"]
	if !ok || len(n.Ipam.Config) != 1 || n.Ipam.Config[0].Subnet == "" {
		t.Fatalf("networks.default: got %+v, want one IPAM subnet", n.Ipam)
	}
	return n.Ipam.Config[0].Subnet
}

// requireBindMount fails t unless svc mounts the repository file source
// read-only at target.
func requireBindMount(t *testing.T, svc types.ServiceConfig, source, target string) {
	t.Helper()
	abs, err := filepath.Abs(source)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range svc.Volumes {
		if v.Target != target {
			continue
		}
		if v.Type != types.VolumeTypeBind || filepath.Clean(v.Source) != abs || !v.ReadOnly {
			t.Errorf("volume at %s: got %s %s (read-only %v), want a read-only bind of %s", target, v.Type, v.Source, v.ReadOnly, source)
		}
		return
	}
	t.Errorf("volumes: got %+v, want %s mounted at %s", svc.Volumes, source, target)
}

// TestComposeOnlyCaddyPublishes checks that Caddy is the deployment's one
// published port, on loopback, to Caddy's listen port.
func TestComposeOnlyCaddyPublishes(t *testing.T) {
	p := loadComposeProject(t)
	for name, svc := range p.Services {
		if name != "caddy" && len(svc.Ports) != 0 {
			t.Errorf("%s ports: got %+v, want none", name, svc.Ports)
		}
	}
	caddy := service(t, p, "caddy")
	listen := envValue(caddy, "CHATSTREAM_LISTEN")
	if len(caddy.Ports) != 1 {
		t.Fatalf("caddy ports: got %+v, want one", caddy.Ports)
	}
	if pc := caddy.Ports[0]; pc.HostIP != "127.0.0.1" || pc.Published != "8080" || pc.Target != 8080 || pc.Protocol != "tcp" {
		t.Errorf("caddy port: got %+v, want 127.0.0.1:8080 -> 8080/tcp", pc)
	}
	if listen != ":8080" {
		t.Errorf("caddy CHATSTREAM_LISTEN: got %q, want %q (the published port's target)", listen, ":8080")
	}
}

// TestComposeCaddy checks that Caddy runs deploy/Caddyfile in front of
// every chat instance once each is healthy.
func TestComposeCaddy(t *testing.T) {
	p := loadComposeProject(t)
	caddy := service(t, p, "caddy")
	chats := chatServices(p)

	t.Run("mounts deploy/Caddyfile", func(t *testing.T) {
		requireBindMount(t, caddy, "deploy/Caddyfile", "/etc/caddy/Caddyfile")
		if cmd := strings.Join(caddy.Command, " "); !strings.Contains(cmd, "--config /etc/caddy/Caddyfile") {
			t.Errorf("command: got %q, want it to run /etc/caddy/Caddyfile", cmd)
		}
	})

	t.Run("depends on every healthy instance", func(t *testing.T) {
		for _, name := range chats {
			dep, ok := caddy.DependsOn[name]
			if !ok || dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on %s: got %+v (present %v), want condition %q", name, dep, ok, types.ServiceConditionHealthy)
			}
		}
	})

	t.Run("upstreams are every instance", func(t *testing.T) {
		var want []string
		for _, name := range chats {
			want = append(want, name+":8080")
		}
		if got := strings.Fields(envValue(caddy, "CHATSTREAM_UPSTREAMS")); !slices.Equal(got, want) {
			t.Errorf("CHATSTREAM_UPSTREAMS: got %v, want %v", got, want)
		}
	})
}

// TestComposePrometheus checks that Prometheus runs deploy/prometheus.yml
// and that its chatstream job scrapes every chat instance's internal
// listener (port 9091).
func TestComposePrometheus(t *testing.T) {
	p := loadComposeProject(t)
	prom := service(t, p, "prometheus")
	requireBindMount(t, prom, "deploy/prometheus.yml", "/etc/prometheus/prometheus.yml")

	data, err := os.ReadFile("deploy/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("deploy/prometheus.yml: %v", err)
	}
	var got []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "chatstream" {
			continue
		}
		for _, st := range sc.StaticConfigs {
			got = append(got, st.Targets...)
		}
	}
	var want []string
	for _, name := range chatServices(p) {
		want = append(want, name+":9091")
	}
	if !slices.Equal(got, want) {
		t.Errorf("deploy/prometheus.yml chatstream targets: got %v, want %v", got, want)
	}
}

// TestComposeChatSettingsKnown checks that every flag in a chat instance's
// command and every CHATSTREAM_ variable of its environment is one that
// `chatstream serve` has: an unknown flag stops the container, and an
// unknown variable is silently ignored.
func TestComposeChatSettingsKnown(t *testing.T) {
	p := loadComposeProject(t)
	for _, name := range chatServices(p) {
		svc := service(t, p, name)
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			args := append(slices.Clone(svc.Command), "--help")
			if code := chatcli.Run(t.Context(), args, &out, &out); code != 0 {
				t.Fatalf("chatstream %s: exit %d:\n%s", strings.Join(args, " "), code, out.String())
			}
			help := out.String()
			for env := range svc.Environment {
				if strings.HasPrefix(env, "CHATSTREAM_") && !strings.Contains(help, "($"+env+")") {
					t.Errorf("environment %s: chatstream %s has no such variable", env, strings.Join(svc.Command, " "))
				}
			}
		})
	}
}

// dockerfileStages reads the Dockerfile and returns its instructions grouped
// by build stage, one slice per FROM. Comments, blank lines and line
// continuations are handled; instruction keywords are upper-cased.
func dockerfileStages(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatalf("open Dockerfile: %v", err)
	}
	defer f.Close()

	var stages [][]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		instr := cur.String()
		cur.Reset()
		keyword, rest, _ := strings.Cut(instr, " ")
		instr = strings.ToUpper(keyword) + " " + strings.TrimSpace(rest)
		if strings.HasPrefix(instr, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], instr)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile: got no FROM stage")
	}
	return stages
}

// TestComposeDockerfile checks that the final image runs as a non-root user
// and that the binary is built statically with CGO disabled.
func TestComposeDockerfile(t *testing.T) {
	stages := dockerfileStages(t)

	t.Run("final stage runs as non-root", func(t *testing.T) {
		final := stages[len(stages)-1]
		user := ""
		for _, instr := range final {
			if u, ok := strings.CutPrefix(instr, "USER "); ok {
				user = u // the last USER wins
			}
		}
		name, _, _ := strings.Cut(user, ":")
		if name == "" || name == "root" || name == "0" {
			t.Errorf("final stage USER: got %q, want a non-root user", user)
		}
	})

	t.Run("build uses CGO_ENABLED=0", func(t *testing.T) {
		// CGO_ENABLED=0 may be set inline on the RUN or by an ENV in the same stage.
		found := slices.ContainsFunc(stages, func(stage []string) bool {
			text := strings.Join(stage, "\n")
			return strings.Contains(text, "CGO_ENABLED=0") && strings.Contains(text, "go build")
		})
		if !found {
			t.Error("Dockerfile: got no `go build` with CGO_ENABLED=0, want one")
		}
	})
}

// volumeAt returns svc's volume mounted at target, failing t without one.
func volumeAt(t *testing.T, name string, svc types.ServiceConfig, target string) types.ServiceVolumeConfig {
	t.Helper()
	for _, v := range svc.Volumes {
		if v.Target == target {
			return v
		}
	}
	t.Fatalf("%s volumes: got %+v, want one at %s", name, svc.Volumes, target)
	return types.ServiceVolumeConfig{}
}

// flagValue returns the value after flag in a command, "" when absent.
func flagValue(cmd []string, flag string) string {
	if i := slices.Index(cmd, flag); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

// TestComposeSignIn checks that the deployment signs users in through the
// example token server: the instances run with --auth jwt and verify with
// the secret file the token server signs with (one named volume, written
// once by jwt-secret), the page's token URL is under the /auth/ prefix
// Caddy routes to the token server, and the token server reads the demo
// users file and listens where Caddy sends /auth/.
func TestComposeSignIn(t *testing.T) {
	p := loadComposeProject(t)
	ts := service(t, p, "tokenserver")
	caddy := service(t, p, "caddy")
	writer := service(t, p, "jwt-secret")

	secretFile := flagValue(ts.Command, "--secret-file")
	if secretFile == "" {
		t.Fatalf("tokenserver command: got %q, want --secret-file", ts.Command)
	}
	secretDir := filepath.Dir(secretFile)
	tsSecret := volumeAt(t, "tokenserver", ts, secretDir)
	if tsSecret.Type != types.VolumeTypeVolume || !tsSecret.ReadOnly {
		t.Errorf("tokenserver secret volume: got %+v, want a read-only named volume", tsSecret)
	}

	t.Run("jwt-secret writes the shared secret", func(t *testing.T) {
		v := volumeAt(t, "jwt-secret", writer, secretDir)
		if v.Source != tsSecret.Source || v.ReadOnly {
			t.Errorf("jwt-secret volume: got %+v, want %s writable", v, tsSecret.Source)
		}
		if cmd := strings.Join(writer.Command, " "); !strings.Contains(cmd, filepath.Base(secretFile)) || !strings.Contains(cmd, "65532") {
			t.Errorf("jwt-secret command: got %q, want it to write %s for user 65532", cmd, secretFile)
		}
	})

	for _, name := range chatServices(p) {
		t.Run(name, func(t *testing.T) {
			svc := service(t, p, name)
			if got := envValue(svc, "CHATSTREAM_AUTH"); got != "jwt" {
				t.Errorf("CHATSTREAM_AUTH: got %q, want jwt", got)
			}
			if got := envValue(svc, "CHATSTREAM_JWT_SECRET_FILE"); got != secretFile {
				t.Errorf("CHATSTREAM_JWT_SECRET_FILE: got %q, want the token server's %q", got, secretFile)
			}
			if v := volumeAt(t, name, svc, secretDir); v.Source != tsSecret.Source || !v.ReadOnly {
				t.Errorf("secret volume: got %+v, want %s read-only", v, tsSecret.Source)
			}
			if dep, ok := svc.DependsOn["jwt-secret"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("depends_on jwt-secret: got %+v (present %v), want completed successfully", dep, ok)
			}
			if got := envValue(svc, "CHATSTREAM_TOKEN_URL"); !strings.HasPrefix(got, "/auth/") {
				t.Errorf("CHATSTREAM_TOKEN_URL: got %q, want a path under /auth/ (Caddy's route to the token server)", got)
			}
			if got := envValue(svc, "CHATSTREAM_SIGN_IN_URL"); !strings.HasPrefix(got, "/auth/") {
				t.Errorf("CHATSTREAM_SIGN_IN_URL: got %q, want a path under /auth/", got)
			}
		})
	}

	t.Run("tokenserver", func(t *testing.T) {
		if ts.Build == nil || filepath.Clean(ts.Build.Dockerfile) != filepath.Join("examples", "tokenserver", "Dockerfile") {
			t.Errorf("build: got %+v, want examples/tokenserver/Dockerfile", ts.Build)
		}
		users := flagValue(ts.Command, "--users")
		requireBindMount(t, ts, "examples/tokenserver/users.txt", users)
		_, port, _ := strings.Cut(flagValue(ts.Command, "--addr"), ":")
		if want := "tokenserver:" + port; port == "" || envValue(caddy, "CHATSTREAM_TOKENSERVER") != want {
			t.Errorf("caddy CHATSTREAM_TOKENSERVER: got %q, want %q (the token server's --addr %q)",
				envValue(caddy, "CHATSTREAM_TOKENSERVER"), want, flagValue(ts.Command, "--addr"))
		}
		if _, ok := caddy.DependsOn["tokenserver"]; !ok {
			t.Errorf("caddy depends_on: got %v, want tokenserver", caddy.DependsOn)
		}
	})
}
