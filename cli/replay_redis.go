package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/chatstream/chatstream/pipeline/redisstore"
)

// redisFlags select the Redis deployment the tools work on.
type redisFlags struct {
	Redis       string `required:"" env:"CHATSTREAM_REDIS_URL" placeholder:"URL" help:"Redis: redis://host:port/db, or host:port,host:port,... for a Cluster."`
	RedisPrefix string `default:"${default_redis_prefix}" env:"CHATSTREAM_REDIS_PREFIX" help:"Prefix of every Redis key."`
	Partitions  int    `default:"${default_partitions}" env:"CHATSTREAM_PARTITIONS" help:"Partition bus streams (as configured on the instances)."`
}

// open connects to the deployment's Redis and checks that it answers.
func (f redisFlags) open(ctx context.Context, log *slog.Logger) (*redisstore.Backend, error) {
	b, err := redisstore.New(redisstore.Config{URL: f.Redis, Prefix: f.RedisPrefix, Partitions: f.Partitions, Logger: log})
	if err != nil {
		return nil, usageError(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Ping(pctx); err != nil {
		_ = b.Close() // nothing was used
		return nil, fmt.Errorf("redis %s unreachable: %w", f.Redis, err)
	}
	return b, nil
}
