package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	// serve and the moderation tools build every built-in kind.
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// serveModeration loads the --moderation file for serve: the chain's
// moderators, and its background work (watching rules and word files,
// reloading every moderator on SIGHUP) running until stop is called or ctx
// is done. With a Redis backend the moderators may share state through it,
// under the deployment's prefix. Any error in the file is returned, naming
// the file and line, and nothing is started.
func serveModeration(ctx context.Context, path string, backend pipeline.Backend, prefix string, log *slog.Logger) (mods []pipeline.Moderator, stop func(), err error) {
	env := moderation.Env{Logger: log, RedisPrefix: prefix}
	if b, ok := backend.(*redisstore.Backend); ok {
		env.Redis = b.Client()
	}
	chain, err := moderation.LoadFile(path, env)
	if err != nil {
		return nil, nil, fmt.Errorf("--moderation: %w", err)
	}
	log.Info("moderation loaded", "file", path, "moderators", chain.Len())
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := chain.Run(ctx); err != nil {
			log.Warn("moderation background work stopped", "err", err)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := chain.Reload(); err != nil {
					log.Error("moderation reload failed; the previous configuration stays in force", "err", err)
					continue
				}
				log.Info("moderation reloaded", "file", path)
			}
		}
	})
	return chain.Moderators(), func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}, nil
}
