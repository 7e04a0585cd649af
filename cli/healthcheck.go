package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// healthcheckCmd asks a running gateway whether it is ready, for container
// healthchecks in images without a shell or curl.
type healthcheckCmd struct {
	Addr    string        `default:":8080" env:"CHATSTREAM_ADDR" help:"The gateway's listen address (a host-less :port means loopback)."`
	Path    string        `default:"/readyz" help:"Endpoint to ask: /readyz (backend reachable) or /healthz (process up)."`
	Timeout time.Duration `default:"3s" help:"How long to wait for the answer."`
}

// Run exits 0 when the endpoint answers 200 and 1 otherwise.
func (h *healthcheckCmd) Run(g *globals) error {
	host, port, err := net.SplitHostPort(h.Addr)
	if err != nil {
		return fmt.Errorf("healthcheck: --addr %q: %w", h.Addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + h.Path
	ctx, cancel := context.WithTimeout(g.Ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	_ = resp.Body.Close() // only the status matters
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}
