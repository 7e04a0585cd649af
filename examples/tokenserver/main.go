// Command tokenserver is an example of the endpoint chatstream's --token-url
// names: the part of an application that knows who its users are and hands
// the chat page a signed token saying so.
//
// It has three parts, each a few lines:
//
//   - a sign-in form (GET and POST /auth/login) that checks a user name and
//     password against a file of bcrypt hashes (users.go);
//   - a session: a random id in an HttpOnly, SameSite=Lax cookie, mapped in
//     memory to the user (sessions.go);
//   - the token endpoint (POST /auth/token): for a signed-in session, an
//     HS256 token with sub, name, exp and optional rooms, signed with the
//     secret file chatstream verifies it with (--jwt-secret-file).
//
// Run it beside chatstream, behind one address (deploy/Caddyfile routes
// /auth/* here):
//
//	head -c 32 /dev/urandom | base64 > secret
//	tokenserver --users users.txt --secret-file secret --addr :8090
//	chatstream serve --auth jwt --jwt-secret-file secret --token-url /auth/token --sign-in-url /auth/login
//
// A real application replaces users.go with its own user store and keeps
// the token endpoint as it is.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg Config
	addr := flag.String("addr", ":8090", "listen address")
	flag.StringVar(&cfg.UsersFile, "users", "users.txt", "users file: one user:bcrypt-hash[:display name[:room patterns]] per line")
	flag.StringVar(&cfg.SecretFile, "secret-file", "", "HS256 secret, the file chatstream's --jwt-secret-file names (at least 32 bytes)")
	flag.DurationVar(&cfg.TokenTTL, "ttl", DefaultTokenTTL, "lifetime of a token; the chat page fetches a new one before it expires")
	flag.DurationVar(&cfg.SessionTTL, "session-ttl", DefaultSessionTTL, "lifetime of a sign-in")
	flag.StringVar(&cfg.Issuer, "issuer", "", "iss of every token (chatstream's --jwt-issuer); empty: none")
	flag.StringVar(&cfg.Audience, "audience", "", "aud of every token (chatstream's --jwt-audience); empty: none")
	flag.BoolVar(&cfg.SecureCookie, "secure-cookie", false, "mark the session cookie Secure (set it when the page is served over HTTPS)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "tokenserver:", err)
		os.Exit(1)
	}
}

// run serves the token server on addr until ctx is done.
func run(ctx context.Context, addr string, cfg Config, log *slog.Logger) error {
	srv, err := New(cfg)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Addr: addr, Handler: srv,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	log.Info("tokenserver listening", "addr", addr, "users", srv.users.count())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
