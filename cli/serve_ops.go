package cli

import (
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/chatstream/chatstream/server"
)

// serveOpsFlags are serve's flags for operators, embedded into serveCmd.
type serveOpsFlags struct {
	InternalAddr string `default:"${default_internal_addr}" env:"CHATSTREAM_INTERNAL_ADDR" placeholder:"ADDR" help:"Internal listener for operators: /metrics (Prometheus), /healthz (JSON with instance and version), /readyz and /debug/pprof/. Never publish it. Empty: off."`
}

// opsConfig returns the server's operator configuration: the internal
// listener and the startup summary of every serve flag, secrets redacted.
func (s *serveCmd) opsConfig() server.OpsConfig {
	return server.OpsConfig{InternalAddr: s.Ops.InternalAddr, Summary: flagSummary(s)}
}

// secretFlag matches the flags whose value is never logged: only whether
// they are set.
var secretFlag = regexp.MustCompile(`(?i)token|secret|password|passwd|credential|private|key$|keys$`)

// redactedValue stands for a secret flag's value that is set.
const redactedValue = "[redacted]"

// flagSummary returns one attribute per flag of cmd (a struct or a pointer
// to one; embedded flag structs included), named after the flag in
// snake_case, with secrets redacted: a flag whose name says it is a secret
// shows only that it is set, and a URL its user name but no password.
func flagSummary(cmd any) []slog.Attr {
	v := reflect.Indirect(reflect.ValueOf(cmd))
	var out []slog.Attr
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		if !f.IsExported() {
			continue
		}
		if _, ok := f.Tag.Lookup("embed"); ok || f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, flagSummary(fv.Interface())...)
			continue
		}
		name := snake(f.Name)
		switch {
		case secretFlag.MatchString(f.Name):
			if fv.IsZero() {
				out = append(out, slog.String(name, ""))
			} else {
				out = append(out, slog.String(name, redactedValue))
			}
		default:
			out = append(out, slog.String(name, redactURLs(flagText(fv))))
		}
	}
	return out
}

// flagText formats a flag's value as on the command line.
func flagText(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case []string:
		return strings.Join(x, ",")
	default:
		return fmt.Sprint(x)
	}
}

// redactURLs removes the password of every URL in s (comma-separated
// lists too), and the credentials of a host:port written with user@.
func redactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	if at, scheme := strings.Index(s, "@"), strings.Index(s, "://"); strings.Count(s, "@") == 1 &&
		strings.Count(s, "://") == 1 && scheme < at && strings.Contains(s[scheme:at], ",") {
		// One URL whose user information holds a comma (legal in a
		// password): splitting on commas would cut the password in two.
		// (Should it be a list after all, more is hidden, not less.)
		if u, err := url.Parse(s); err == nil && u.User != nil && !strings.Contains(u.Host+u.Path, ",") {
			return u.Redacted()
		}
		return s[:scheme+len("://")] + redactedValue + s[at:]
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil && u.Scheme != "" && u.User != nil {
			parts[i] = u.Redacted()
			continue
		}
		if at := strings.LastIndex(p, "@"); at >= 0 {
			parts[i] = redactedValue + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

// snake turns a Go field name (MaxConnsPerIP) into a log key
// (max_conns_per_ip).
func snake(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			lowerBefore := i > 0 && unicode.IsLower(rs[i-1])
			acronymEnd := i > 0 && i+1 < len(rs) && unicode.IsUpper(rs[i-1]) && unicode.IsLower(rs[i+1])
			if lowerBefore || acronymEnd {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
