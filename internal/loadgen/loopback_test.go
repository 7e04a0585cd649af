package loadgen

import (
	"errors"
	"testing"
)

// TestLoopback: URLs and dialled addresses must be loopback.
func TestLoopback(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"http://127.0.0.1:8080", "ws://127.0.0.1:8080"},
		{"http://127.1.2.3:8080/", "ws://127.1.2.3:8080"},
		{"http://localhost:8080", "ws://localhost:8080"},
		{"ws://[::1]:8080", "ws://[::1]:8080"},
		{"https://127.0.0.1", "wss://127.0.0.1"},
		{"http://10.0.0.1:8080", ""},
		{"http://127.example.com", ""},
		{"http://0.0.0.0:8080", ""},
		{"http://localhost.example.com", ""},
		{"http://127.0.0.1:8080/?user=x", ""},
		{"ftp://127.0.0.1", ""},
	} {
		got, err := wsURL(tc.url)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("wsURL(%q) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
	for addr, ok := range map[string]bool{"127.0.0.1:80": true, "[::1]:80": true, "10.1.2.3:80": false, "[2001:db8::1]:80": false} {
		err := loopbackOnly("tcp", addr, nil)
		if ok != (err == nil) || (!ok && !errors.Is(err, ErrNotLoopback)) {
			t.Errorf("loopbackOnly(%s) = %v, want ok %v", addr, err, ok)
		}
	}
}
