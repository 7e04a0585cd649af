package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"

	// The tools build the same moderator kinds as serve.
	_ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// ErrModerationUnset reports a requeue or replay --into given neither
// --moderation nor --no-moderation: republished messages pass the
// instances' moderation unless skipping it is asked for explicitly, since
// a dead letter requeued without it is stored exactly as moderation
// refused it.
var ErrModerationUnset = errors.New("republishing runs the moderation chain: give --moderation FILE (the instances' configuration, or CHATSTREAM_MODERATION) or --no-moderation to store the messages as they are")

// loadModeration builds the moderator chain of a configuration file for a
// tool's pipeline and runs its background work; stop ends it. skip (the
// --no-moderation flag) is no moderation, logged; neither is a usage error
// (ErrModerationUnset). what names the messages in the log.
func loadModeration(ctx context.Context, path string, skip bool, what string, b *redisstore.Backend, log *slog.Logger) ([]pipeline.Moderator, func(), error) {
	switch {
	case skip && path != "":
		return nil, nil, usageError(errors.New("give --moderation or --no-moderation, not both"))
	case skip:
		log.Warn("moderation skipped (--no-moderation): the " + what + " messages are stored as they are")
		return nil, func() {}, nil
	case path == "":
		return nil, nil, usageError(ErrModerationUnset)
	}
	mods, stop, err := startModeration(ctx, path, moderation.Env{Logger: log, Redis: b.Client(), RedisPrefix: b.Keys().Prefix}, false)
	if err != nil {
		return nil, nil, usageError(err)
	}
	return mods, stop, nil
}
