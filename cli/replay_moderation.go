package cli

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
	// The tools build the same moderator kinds as serve.
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// loadModeration builds the moderator chain of a configuration file for a
// tool's pipeline and runs its background work; stop ends it. An empty
// path is no moderation.
func loadModeration(ctx context.Context, path string, b *redisstore.Backend, log *slog.Logger) ([]pipeline.Moderator, func(), error) {
	if path == "" {
		return nil, func() {}, nil
	}
	chain, err := moderation.LoadFile(path, moderation.Env{Logger: log, Redis: b.Client(), RedisPrefix: b.Keys().Prefix})
	if err != nil {
		return nil, nil, usageError(fmt.Errorf("--moderation: %w", err))
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := chain.Run(rctx); err != nil && rctx.Err() == nil {
			log.Warn("moderation stopped", "err", err)
		}
	})
	return chain.Moderators(), func() { cancel(); wg.Wait() }, nil
}
