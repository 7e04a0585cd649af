// Command echobot joins a room and echoes every message that mentions it
// (@name), built on package client: it reconnects and resumes by itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chatstream/chatstream/client"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "chatstream server")
	room := flag.String("room", "lobby", "room to join")
	name := flag.String("name", "echobot", "user name; messages mentioning @name are echoed")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *name, *room); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "echobot:", err)
		os.Exit(1)
	}
}

// run echoes the messages of room that mention @name until ctx ends.
func run(ctx context.Context, url, name, room string) error {
	c, err := client.Dial(ctx, client.Config{URL: url, User: name})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Join(ctx, room, client.JoinOptions{History: 0}); err != nil {
		return err
	}
	for m := range c.Messages() {
		if m.User == name || !strings.Contains(m.Text, "@"+name) {
			continue
		}
		sendCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Send(sendCtx, m.Room, m.User+" said: "+m.Text)
		cancel()
		if err != nil {
			slog.Warn("echo failed", "room", m.Room, "err", err)
		}
	}
	return c.Err()
}
