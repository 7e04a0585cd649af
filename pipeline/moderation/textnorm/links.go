package textnorm

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Link is a link found in a text.
type Link struct {
	// Text is the link as written (trailing punctuation removed).
	Text string
	// Host is its host name in lower case, without port or trailing dot.
	Host string
}

// Links returns the links of text: http(s) URLs, and bare domains such as
// example.com or www.example.com/path whose top-level domain is a country
// code or a common generic one (so "node.js" or "file.txt" are not links).
// E-mail addresses are not links.
func Links(text string) []Link {
	var out []Link
	for i := 0; i < len(text); {
		// Skip separators, then take one chunk up to the next separator.
		r, size := utf8.DecodeRuneInString(text[i:])
		if isLinkSeparator(r) {
			i += size
			continue
		}
		start := i
		for i < len(text) {
			r, size = utf8.DecodeRuneInString(text[i:])
			if isLinkSeparator(r) {
				break
			}
			i += size
		}
		chunk := strings.TrimRight(text[start:i], ".,;:!?*_~")
		if l, ok := linkOf(chunk); ok {
			out = append(out, l)
		}
	}
	return out
}

// isLinkSeparator reports whether r ends a link: white space, brackets and
// quotes.
func isLinkSeparator(r rune) bool {
	switch r {
	case '(', ')', '[', ']', '{', '}', '<', '>', '"', '\'', '`', '|':
		return true
	}
	return unicode.IsSpace(r) || r == utf8.RuneError
}

// linkOf reports whether chunk is a link and returns it.
func linkOf(chunk string) (Link, bool) {
	if !strings.Contains(chunk, ".") && !strings.Contains(chunk, "://") {
		return Link{}, false
	}
	lower := strings.ToLower(chunk)
	if rest, ok := cutScheme(lower); ok {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 { // user:pass@host
			rest = rest[at+1:]
		}
		host := strings.TrimSuffix(hostOf(rest), ".")
		if host == "" {
			return Link{}, false
		}
		return Link{Text: chunk, Host: host}, true
	}
	host := hostOf(lower)
	if strings.Contains(host, "@") || strings.Contains(chunk, "://") {
		return Link{}, false // an e-mail address, or a scheme other than http(s)
	}
	host = strings.TrimSuffix(host, ".")
	if !isDomain(host) {
		return Link{}, false
	}
	return Link{Text: chunk, Host: host}, true
}

// cutScheme removes a leading http:// or https://.
func cutScheme(s string) (string, bool) {
	if rest, ok := strings.CutPrefix(s, "https://"); ok {
		return rest, true
	}
	return strings.CutPrefix(s, "http://")
}

// hostOf returns the host part of an authority followed by an optional
// path, query or fragment (the port removed).
func hostOf(s string) string {
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[i:], "]") {
		s = s[:i]
	}
	return s
}

// isDomain reports whether host looks like a domain name: two or more
// labels of letters, digits and hyphens, the last a known top-level domain.
func isDomain(host string) bool {
	labels := strings.Split(host, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-') {
				return false
			}
		}
	}
	return isTLD(labels[len(labels)-1])
}

// isTLD reports whether s is a country-code top-level domain or one of the
// common generic ones.
func isTLD(s string) bool {
	if len(s) == 2 {
		return strings.Contains(ccTLDs, " "+s+" ")
	}
	return strings.Contains(gTLDs, " "+s+" ")
}

// ccTLDs are the ISO 3166 country-code top-level domains (and eu, uk).
const ccTLDs = " ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt bw by bz " +
	"ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et eu fi fj fk fm fo fr " +
	"ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp " +
	"ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt " +
	"mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru " +
	"rw sa sb sc sd se sg sh si sk sl sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua " +
	"ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw "

// gTLDs are the generic top-level domains common in links.
const gTLDs = " com net org info biz edu gov mil int app dev xyz online site top club shop store tech link live pro " +
	"news blog cloud page icu vip win bid click space website fun art design email network money finance " +
	"chat social media tube video stream games game bet casino loan "
