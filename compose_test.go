package chatstream_test

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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

// TestComposeServicesExist checks that redis and the three chat nodes are defined.
func TestComposeServicesExist(t *testing.T) {
	p := loadComposeProject(t)
	for _, name := range []string{"redis", "chat1", "chat2", "chat3"} {
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

// TestComposeChatServices checks dependencies, ports, Redis URL and build of
// every chat node.
func TestComposeChatServices(t *testing.T) {
	p := loadComposeProject(t)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		hostPort string
	}{
		{"chat1", "8081"},
		{"chat2", "8082"},
		{"chat3", "8083"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, p, tt.name)

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

			t.Run("publishes port", func(t *testing.T) {
				found := slices.ContainsFunc(svc.Ports, func(pc types.ServicePortConfig) bool {
					return pc.Published == tt.hostPort && pc.Target == 8080
				})
				if !found {
					t.Errorf("ports: got %+v, want host %s -> container 8080", svc.Ports, tt.hostPort)
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

			t.Run("redis url", func(t *testing.T) {
				url := svc.Environment["CHATSTREAM_REDIS_URL"]
				if url == nil || !strings.HasPrefix(*url, "redis://redis:6379") {
					got := "<unset>"
					if url != nil {
						got = *url
					}
					t.Errorf("CHATSTREAM_REDIS_URL: got %q, want prefix %q", got, "redis://redis:6379")
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
