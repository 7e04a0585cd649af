package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/internal/syncbuf"
)

// TestAdminTokenFile: --admin-token-file gives the admin token from a
// file, trimmed; a file that cannot be read or is empty, or both flags at
// once, is refused.
func TestAdminTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, blank := write("token", "  s3cret-token-0123456789abcdef\n"), write("blank", " \n\t")
	cases := []struct {
		name, token, file, want, err string
	}{
		{"flag only", "from-flag", "", "from-flag", ""},
		{"file only", "", good, "s3cret-token-0123456789abcdef", ""},
		{"neither", "", "", "", ""},
		{"both", "from-flag", good, "", "both set"},
		{"missing file", "", filepath.Join(dir, "nope"), "", "no such file"},
		{"empty file", "", blank, "", "holds no token"},
		{"two lines", "", write("lines", "first\nsecond\n"), "", "more than one line"},
	}
	for _, tc := range cases {
		got, err := adminToken(tc.token, tc.file)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %q, %v; want an error saying %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}

	// serve refuses both at once before it starts anything.
	var logs syncbuf.Buffer
	code := Run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
		"--admin-token", "from-flag", "--admin-token-file", good}, io.Discard, &logs)
	if code != exitUsage || !strings.Contains(logs.String(), "both set") {
		t.Fatalf("serve with both: exit %d, output %q; want %d saying both are set", code, logs.String(), exitUsage)
	}
}
