package admission

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ClientAddr returns the address of the client that sent r.
//
// It is the TCP peer's address, unless the peer is a trusted proxy: then
// X-Forwarded-For is read from the right (the end each proxy appends to),
// skipping trusted proxies, and the first address that is not one is the
// client. A malformed value ends the walk: it is ignored, and nothing left
// of it is believed, since only a client could have written it there; the
// client is then the nearest trusted proxy to its right. When every
// address is a trusted proxy, the left-most is the client. Without trusted
// proxies the header is never read.
//
// Addresses are returned without IPv4-in-IPv6 mapping or zone. A
// RemoteAddr that is not ip:port (which net/http does not produce for TCP)
// gives the zero Addr, under which all such requests are counted together.
func (a *Admission) ClientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	client := normal(ap.Addr())
	if !a.isTrusted(client) {
		return client
	}
	hdr := r.Header.Values("X-Forwarded-For")
	for i := len(hdr) - 1; i >= 0; i-- {
		rest := hdr[i]
		for more := true; more; {
			elem := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				elem, rest = rest[j+1:], rest[:j]
			} else {
				more = false
			}
			addr, ok := parseForwarded(strings.TrimSpace(elem))
			if !ok {
				return client
			}
			client = addr
			if !a.isTrusted(addr) {
				return client
			}
		}
	}
	return client
}

// parseForwarded parses one X-Forwarded-For element: an address, or an
// address with a port ("192.0.2.1:4711", "[2001:db8::1]:4711"), as some
// proxies write.
func parseForwarded(s string) (netip.Addr, bool) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return normal(addr), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normal(ap.Addr()), true
	}
	return netip.Addr{}, false
}

func normal(addr netip.Addr) netip.Addr { return addr.Unmap().WithZone("") }

func (a *Admission) isTrusted(addr netip.Addr) bool {
	for _, p := range a.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// parseTrusted parses CIDRs and single addresses.
func parseTrusted(ss []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			addr, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("admission: trusted proxy %q is not a CIDR (10.0.0.0/8) or an address", s)
			}
			addr = normal(addr)
			ps = append(ps, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("admission: trusted proxy %q is not a CIDR (10.0.0.0/8) or an address", s)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("admission: trusted proxy %q: write IPv4 networks as IPv4 (a.b.c.d/n)", s)
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}
