// Package web holds chatstream's browser assets: the chat page and the
// reusable JavaScript client, embedded into the binary.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS returns the page's files, rooted at the directory that holds index.html.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded static directory missing: " + err.Error())
	}
	return sub
}
