package cli

import (
	"context"
	"fmt"
	"sync"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"

	// serve and the moderation tools build every built-in kind.
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
)

// serveModeration loads the --moderation file for serve: the chain's
// moderators, and its background work (watching rules and word files,
// reloading every moderator on SIGHUP) running until stop is called or ctx
// is done. env is the backend's (backend.Backend.ModerationEnv): with Redis
// the moderators may share state through it. Any error in the file is
// returned, naming the file and line, and nothing is started.
func serveModeration(ctx context.Context, path string, env moderation.Env) (chain *moderation.Chain, stop func(), err error) {
	return runModeration(ctx, path, env, true)
}

// startModeration loads path and runs the chain's background work, and,
// with hup, reloads it on SIGHUP; stop ends both.
func startModeration(ctx context.Context, path string, env moderation.Env, hup bool) (mods []pipeline.Moderator, stop func(), err error) {
	chain, stop, err := runModeration(ctx, path, env, hup)
	if err != nil {
		return nil, nil, err
	}
	return chain.Moderators(), stop, nil
}

// runModeration is startModeration returning the chain itself (whose Stats
// the metrics read).
func runModeration(ctx context.Context, path string, env moderation.Env, hup bool) (chain *moderation.Chain, stop func(), err error) {
	log := env.Logger
	chain, err = moderation.LoadFile(path, env)
	if err != nil {
		return nil, nil, fmt.Errorf("--moderation: %w", err)
	}
	log.Info("moderation loaded", "file", path, "moderators", chain.Len())
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := chain.Run(ctx); err != nil && ctx.Err() == nil {
			log.Warn("moderation background work stopped", "err", err)
		}
	})
	stopHangup := func() {}
	if hup {
		stopHangup = reloadOnHangup(ctx, log, "moderation", path, chain.Reload)
	}
	return chain, func() {
		stopHangup()
		cancel()
		wg.Wait()
	}, nil
}
