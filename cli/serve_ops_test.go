package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/internal/syncbuf"
)

// TestStartupSummary: serve logs one JSON line at startup with the
// instance id, version, addresses, backend and every flag; the admin token
// and the Redis password are not in the log at all.
func TestStartupSummary(t *testing.T) {
	const token, password = "tok-9f8e7d6c5b4a", "pw-1a2b3c4d5e6f"
	var logs syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--log-format", "json", "serve",
			"--addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
			"--admin-token", token,
			// Nothing listens on port 1: the backend connects lazily and
			// the summary is written before anything needs Redis.
			"--redis", "redis://chat:" + password + "@127.0.0.1:1/0",
			"--shutdown-timeout", "2s",
		}, io.Discard, &logs)
	}()
	var line map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for line == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no startup line within 10s; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "chatstream starting" {
				line = m
			}
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	for _, key := range []string{"instance", "version", "addr", "internal_addr", "backend", "partitions", "flags"} {
		if _, ok := line[key]; !ok {
			t.Errorf("startup line has no %s: %v", key, line)
		}
	}
	// The flags as given are a group of their own, so that a flag named
	// like an effective value (addr, partitions) does not repeat its key.
	flags, _ := line["flags"].(map[string]any)
	for _, key := range []string{"addr", "redis", "redis_prefix", "partitions", "max_conns_per_ip", "read_limit", "admin_token"} {
		if _, ok := flags[key]; !ok {
			t.Errorf("startup line's flags have no %s: %v", key, line)
		}
	}
	if flags["addr"] != "127.0.0.1:0" || line["addr"] == "127.0.0.1:0" {
		t.Errorf("addr %v (the listener's), flags.addr %v (as given)", line["addr"], flags["addr"])
	}
	if line["backend"] != "redis" || flags["admin_token"] != redactedValue || line["instance"] == "" {
		t.Errorf("startup line: backend %v, admin_token %v, instance %v", line["backend"], flags["admin_token"], line["instance"])
	}
	if got, want := flags["redis"], "redis://chat:xxxxx@127.0.0.1:1/0"; got != want {
		t.Errorf("redis = %v, want %v", got, want)
	}
	if all := logs.String(); strings.Contains(all, token) || strings.Contains(all, password) {
		t.Errorf("a secret is in the log:\n%s", all)
	}
}

// TestFlagSummaryRedaction: secrets by name, URL passwords, and the
// credentials of a host list.
func TestFlagSummaryRedaction(t *testing.T) {
	t.Parallel()
	type inner struct {
		WebhookSecret string
		Peers         []string
		Sentinel      string
	}
	cmd := struct {
		AdminToken    string
		Redis         string
		MaxConnsPerIP int
		Empty         string
		Nested        inner `embed:""`
		unexported    string
	}{
		AdminToken: "t0k", Redis: "rediss://u:p4ss@h:6380/1", MaxConnsPerIP: 7,
		Nested: inner{WebhookSecret: "s3c", Peers: []string{"a:1", "u:p4ss@b:2"}, Sentinel: "redis://u:pa,ss-secret@h:26379/0"}, unexported: "x",
	}
	_ = cmd.unexported
	got := map[string]string{}
	for _, a := range flagSummary(&cmd) {
		got[a.Key] = a.Value.String()
	}
	want := map[string]string{
		"admin_token": redactedValue, "redis": "rediss://u:xxxxx@h:6380/1", "max_conns_per_ip": "7", "empty": "",
		"webhook_secret": redactedValue, "peers": "a:1," + redactedValue + "@b:2",
		"sentinel": "redis://u:xxxxx@h:26379/0", // a comma in the password
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got keys %v, want %v", got, want)
	}
}
