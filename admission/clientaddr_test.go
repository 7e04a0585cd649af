package admission_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/chatstream/chatstream/admission"
)

// TestClientAddr: the TCP peer is the client unless it is a trusted proxy;
// then X-Forwarded-For is read from the right, past trusted proxies, up to
// the first malformed value.
func TestClientAddr(t *testing.T) {
	t.Parallel()
	proxies := []string{"10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.10"}
	tests := []struct {
		name    string
		trusted []string
		peer    string
		xff     []string // header lines; nil: no header
		want    string   // "" is the zero Addr
	}{
		{name: "peer", peer: "203.0.113.5:1234", want: "203.0.113.5"},
		{name: "header ignored without trusted proxies", peer: "203.0.113.5:1234", xff: []string{"198.51.100.1"}, want: "203.0.113.5"},
		{name: "header ignored from an untrusted peer", trusted: proxies, peer: "198.51.100.9:1", xff: []string{"203.0.113.7"}, want: "198.51.100.9"},
		{name: "trusted proxy", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "trusted single address", trusted: proxies, peer: "192.0.2.10:1", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "neighbour of a trusted single address", trusted: proxies, peer: "192.0.2.11:1", xff: []string{"203.0.113.7"}, want: "192.0.2.11"},
		{name: "spoofed left part", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"1.1.1.1, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "chain of proxies", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"1.1.1.1,203.0.113.7, 10.0.0.3 ,10.0.0.2"}, want: "203.0.113.7"},
		{name: "every hop trusted", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"10.0.0.3, 10.0.0.2"}, want: "10.0.0.3"},
		{name: "several header lines", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"1.1.1.1", "203.0.113.7, 10.0.0.2"}, want: "203.0.113.7"},
		{name: "client in an earlier line", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.7", "10.0.0.2"}, want: "203.0.113.7"},
		{name: "malformed right-most value", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.7, unknown"}, want: "10.0.0.1"},
		{name: "malformed past the client", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"<script>, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "malformed behind a trusted hop", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"1.1.1.1, 203.0.113.300, 10.0.0.2"}, want: "10.0.0.2"},
		{name: "empty element", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"1.1.1.1,,"}, want: "10.0.0.1"},
		{name: "empty header", trusted: proxies, peer: "10.0.0.1:1", xff: []string{""}, want: "10.0.0.1"},
		{name: "no header from a trusted proxy", trusted: proxies, peer: "10.0.0.1:1", want: "10.0.0.1"},
		{name: "CIDR as a value", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.0/24"}, want: "10.0.0.1"},
		{name: "value with port", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.7:4711"}, want: "203.0.113.7"},
		{name: "IPv6 value with port", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"[2001:db8::7]:4711"}, want: "2001:db8::7"},
		{name: "IPv6 proxy", trusted: proxies, peer: "[2001:db8:ffff:1::1]:1", xff: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "IPv4-mapped peer", trusted: proxies, peer: "[::ffff:10.0.0.1]:1", xff: []string{"::ffff:203.0.113.7"}, want: "203.0.113.7"},
		{name: "zone dropped", peer: "[fe80::1%eth0]:1", want: "fe80::1"},
		{name: "unparseable peer", peer: "@", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := admission.New(admission.Config{TrustedProxies: tt.trusted, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			var want netip.Addr
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got := a.ClientAddr(r); got != want {
				t.Fatalf("ClientAddr = %v, want %v", got, want)
			}
		})
	}
}

// TestClientAddrLoopback: over a real connection the peer is what counts,
// and a header from an untrusted peer changes nothing.
func TestClientAddrLoopback(t *testing.T) {
	t.Parallel()
	a, err := admission.New(admission.Config{TrustedProxies: []string{"10.0.0.0/8"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan netip.Addr, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- a.ClientAddr(r) }))
	t.Cleanup(ts.Close)
	req, err := http.NewRequest(http.MethodGet, ts.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if addr := <-got; addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("ClientAddr = %v, want 127.0.0.1", addr)
	}
}

// TestClientKey: ClientKey is the client address grouped as the limits
// group it: an IPv4 address is itself, an IPv6 address its
// /IPv6PrefixLen network (the network's first address), behind trusted
// proxies too.
func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		prefixLen int // 0: the default, 64
		peer      string
		xff       string // "": no header
		want      string
	}{
		{name: "IPv4 is itself", peer: "203.0.113.5:1", want: "203.0.113.5"},
		{name: "IPv4 neighbour is itself", peer: "203.0.113.6:1", want: "203.0.113.6"},
		{name: "IPv4-mapped is IPv4", peer: "[::ffff:203.0.113.5]:1", want: "203.0.113.5"},
		{name: "IPv6 per /64", peer: "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1", want: "2001:db8:1:2::"},
		{name: "IPv6 neighbour in the /64", peer: "[2001:db8:1:2::1]:1", want: "2001:db8:1:2::"},
		{name: "IPv6 next /64", peer: "[2001:db8:1:3::1]:1", want: "2001:db8:1:3::"},
		{name: "IPv6 per /48", prefixLen: 48, peer: "[2001:db8:1:2::1]:1", want: "2001:db8:1::"},
		{name: "IPv6 per address", prefixLen: 128, peer: "[2001:db8:1:2::1]:1", want: "2001:db8:1:2::1"},
		{name: "IPv6 forwarded by a trusted proxy", peer: "10.0.0.1:1", xff: "2001:db8:1:2::7", want: "2001:db8:1:2::"},
		{name: "IPv4 forwarded by a trusted proxy", peer: "10.0.0.1:1", xff: "198.51.100.7", want: "198.51.100.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := admission.New(admission.Config{TrustedProxies: []string{"10.0.0.0/8"}, IPv6PrefixLen: tt.prefixLen, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			r.RemoteAddr = tt.peer
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if got, want := a.ClientKey(r), netip.MustParseAddr(tt.want); got != want {
				t.Fatalf("ClientKey = %v, want %v", got, want)
			}
		})
	}
}

// TestGroupAddr: IPv4 (mapped or not) is never grouped, IPv6 is grouped
// per network without its zone, and a length that groups nothing or the
// zero Addr leave the address as it is.
func TestGroupAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr      string // "": the zero Addr
		prefixLen int
		want      string
	}{
		{"192.0.2.1", 64, "192.0.2.1"},
		{"::ffff:192.0.2.1", 64, "192.0.2.1"},
		{"::ffff:192.0.2.1", 8, "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::"},
		{"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::"},
		{"fe80::1:2:3:4%eth0", 64, "fe80::"},
		{"2001:db8::1", 128, "2001:db8::1"},
		{"2001:db8::1", 0, "2001:db8::1"},
		{"2001:db8::1", 129, "2001:db8::1"},
		{"", 64, ""},
	}
	for _, tt := range tests {
		var addr, want netip.Addr
		if tt.addr != "" {
			addr, want = netip.MustParseAddr(tt.addr), netip.MustParseAddr(tt.want)
		}
		if got := admission.GroupAddr(addr, tt.prefixLen); got != want {
			t.Errorf("GroupAddr(%v, %d) = %v, want %v", addr, tt.prefixLen, got, want)
		}
	}
}
