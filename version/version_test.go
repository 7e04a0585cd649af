package version_test

import (
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
