package cli

import "time"

// serveRedisFlags are serve's flags for Redis replication and delivery,
// embedded into serveCmd.
type serveRedisFlags struct {
	RedisWaitReplicas int           `default:"0" env:"CHATSTREAM_REDIS_WAIT_REPLICAS" placeholder:"N" help:"Replicas that must confirm each batch of appends (Redis WAIT) before the senders are acked; when fewer confirm within --redis-wait-timeout they get 'unavailable' and may retry with the same ref. 0: no wait (replication is asynchronous: a failover can lose acked messages). Needs --redis."`
	RedisWaitTimeout  time.Duration `default:"1s" env:"CHATSTREAM_REDIS_WAIT_TIMEOUT" help:"How long an append batch waits for --redis-wait-replicas replicas (less than the Redis round-trip timeout, 3s)."`
	RedisBusPush      bool          `default:"true" negatable:"" env:"CHATSTREAM_REDIS_BUS_PUSH" help:"Push each message stored to the instances' partition subscriptions (Redis SPUBLISH and SSUBSCRIBE); --no-redis-bus-push makes them block reading the partition streams instead. Instances with and without it can share a Redis (docs/OPERATIONS.md). Ignored without --redis."`
}
