// Command chatstream runs the chatstream gateway and its tools.
//
//	chatstream [serve] [flags]          run a gateway (the default command)
//	chatstream moderation check|test    validate a moderation config, dry-run it
//	chatstream replay|rejected|streams  inspect and replay the stored streams
//
// `chatstream --help` lists every command and flag with its default.
package main

import (
	"os"

	"github.com/chatstream/chatstream/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
