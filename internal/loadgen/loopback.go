package loadgen

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
)

// ErrNotLoopback is wrapped by Validate for a URL whose host is not a
// loopback address, and by the dialer for a connection to one. chatload
// only ever loads this machine.
var ErrNotLoopback = errors.New("not a loopback address; load is only sent to this machine")

// wsURL checks that base is an http, https, ws or wss URL of a loopback
// host (localhost, 127.0.0.0/8 or ::1) and returns its WebSocket form
// without a trailing slash.
func wsURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("loadgen: URL %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("loadgen: URL %q: scheme %q (known: http, https, ws, wss)", base, u.Scheme)
	}
	if !loopbackHost(u.Hostname()) {
		return "", fmt.Errorf("loadgen: URL %q: %w", base, ErrNotLoopback)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("loadgen: URL %q: want only scheme, host, port and path", base)
	}
	s := u.String()
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s, nil
}

// loopbackHost reports whether host is "localhost" or a loopback IP literal.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly is a net.Dialer Control function: it refuses to connect to
// any address that is not a loopback IP, whatever a name resolved to, so
// the check holds even if "localhost" resolves elsewhere.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("loadgen: dial %s: %w", address, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadgen: dial %s: %w", address, ErrNotLoopback)
	}
	return nil
}
