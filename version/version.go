// Package version tells which build of chatstream is running: the module
// version, the VCS revision and time it was built from, and the Go version,
// from the binary's own build information.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes a build.
type Info struct {
	// Module is the main module's version ("(devel)" for a local build).
	Module string
	// Revision and Time are the VCS revision and commit time ("" unknown);
	// Modified reports uncommitted changes in the build's tree.
	Revision, Time string
	Modified       bool
	// Go is the Go version the binary was built with.
	Go string
}

// linkedRevision is a VCS revision given at link time, for a build from a
// tree without its VCS data (a container build context without .git):
//
//	go build -ldflags "-X github.com/chatstream/chatstream/version.linkedRevision=$(git rev-parse HEAD)"
//
// The revision Go records itself takes precedence.
var linkedRevision string

// Read returns the running binary's build information.
func Read() Info {
	i := Info{Module: "(unknown)", Go: runtime.Version(), Revision: linkedRevision}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	if bi.Main.Version != "" {
		i.Module = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// Short is the build in one word: the module version, or the revision's
// first 12 characters with "+dirty" for a modified tree.
func (i Info) Short() string {
	if i.Module != "(devel)" && i.Module != "(unknown)" || i.Revision == "" {
		return i.Module
	}
	r := i.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if i.Modified {
		r += "+dirty"
	}
	return r
}

// String is the build in one line: module version, revision, time, Go.
func (i Info) String() string {
	rev := i.Revision
	if rev == "" {
		rev = "unknown revision"
	}
	if i.Modified {
		rev += " (modified)"
	}
	t := i.Time
	if t == "" {
		t = "unknown time"
	}
	return fmt.Sprintf("chatstream %s, %s, %s, %s", i.Module, rev, t, i.Go)
}
