package version_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/version"
)

func TestRead(t *testing.T) {
	i := version.Read()
	if i.Go != runtime.Version() || i.Module == "" {
		t.Fatalf("Read() = %+v, want the Go version and a module version", i)
	}
	if s := i.String(); !strings.HasPrefix(s, "chatstream ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("String() = %q", s)
	}
}

func TestShort(t *testing.T) {
	cases := []struct {
		name string
		in   version.Info
		want string
	}{
		{"release", version.Info{Module: "v1.2.3", Revision: "abcdef0123456789"}, "v1.2.3"},
		{"local build", version.Info{Module: "(devel)", Revision: "abcdef0123456789"}, "abcdef012345"},
		{"local dirty", version.Info{Module: "(devel)", Revision: "abcdef0123456789", Modified: true}, "abcdef012345+dirty"},
		{"nothing known", version.Info{Module: "(devel)"}, "(devel)"},
	}
	for _, tc := range cases {
		if got := tc.in.Short(); got != tc.want {
			t.Errorf("%s: Short() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestLinkedRevision: a binary built without VCS data (as in the container
// build, whose context has no .git) reports the revision given at link
// time, as the Dockerfile passes it.
func TestLinkedRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	bin := filepath.Join(t.TempDir(), "chatstream")
	build := exec.Command("go", "build", "-buildvcs=false",
		"-ldflags", "-X github.com/chatstream/chatstream/version.linkedRevision="+rev, "-o", bin, "./cmd/chatstream")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), rev[:12]) {
		t.Fatalf("--version printed %q, want the revision %s", out, rev[:12])
	}
}
