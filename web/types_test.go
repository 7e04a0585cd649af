package web_test

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// tscTimeout bounds the type check, including npx fetching TypeScript from
// the npm registry on its first run.
const tscTimeout = 3 * time.Minute

// TestClientTypes type-checks test/types/usage.ts, a use of every export
// of static/chatstream-client.js, against the hand-written
// static/chatstream-client.d.ts with tsc --strict (TypeScript 5 through
// npx, which needs the npm registry the first time). A declaration that
// is missing, wrong or too loose (the usage's @ts-expect-error lines)
// fails it. Without npx it skips locally and fails under CI.
func TestClientTypes(t *testing.T) {
	t.Parallel()
	npx := requireTool(t, "npx (Node.js)", "npx")
	ctx, cancel := context.WithTimeout(context.Background(), tscTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npx, "-y", "-p", "typescript@5", "tsc", "-p", "test/types/tsconfig.json")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}
