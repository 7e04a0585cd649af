package cli

import (
	"context"
	"log/slog"

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
	mods, stop, err := startModeration(ctx, path, moderation.Env{Logger: log, Redis: b.Client(), RedisPrefix: b.Keys().Prefix}, false)
	if err != nil {
		return nil, nil, usageError(err)
	}
	return mods, stop, nil
}
