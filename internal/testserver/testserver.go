// Package testserver runs a real chatstream server for a test: started on
// cfg.Addr (a free loopback port when empty), ready before Start returns,
// and stopped, with its Run error checked, when the test ends.
package testserver

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream/server"
)

// ReadyWait bounds how long a server may take to become ready.
const ReadyWait = 10 * time.Second

// Instance is a running server.
type Instance struct {
	*server.Server
	stop func()
}

// Stop stops the server and waits for it; calling it again does nothing.
func (in *Instance) Stop() { in.stop() }

// Start runs a server with cfg until t ends. A zero Addr is a free loopback
// port and a nil Logger discards logs.
func Start(t testing.TB, cfg server.Config) *Instance {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	var once sync.Once
	in := &Instance{Server: srv, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(in.Stop)
	select {
	case <-srv.Pipeline().Running():
	case <-time.After(ReadyWait):
		t.Fatal("server did not become ready")
	}
	return in
}
