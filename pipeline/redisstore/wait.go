package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated reports an append that the primary stored but fewer
// than Config.WaitReplicas replicas confirmed within Config.WaitTimeout.
// Its sender is answered unavailable: the message may survive or be lost
// with a failover, and a retry with the same ref is safe either way.
var ErrNotReplicated = errors.New("redisstore: not confirmed by enough replicas")

// waitHook ends every pipeline of the append client with WAIT n timeout,
// on the pipeline's own connection, so that the reply counts the replicas
// that received the pipeline's appends. In a Cluster it is installed on
// each node's client: go-redis splits a pipeline by node and sends each
// part on one connection of that node, and WAIT (keyless, request policy
// all_shards) cannot be routed to the right node as a command of the
// cluster pipeline itself. When fewer than n replicas confirm, every
// command of the pipeline that succeeded fails with ErrNotReplicated.
type waitHook struct {
	n       int
	timeout time.Duration
}

var _ redis.Hook = waitHook{}

// DialHook passes dials through.
func (waitHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook passes single commands through: appends are pipelined.
func (waitHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook adds the WAIT and checks its reply.
func (h waitHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		wait := redis.NewIntCmd(ctx, "wait", h.n, h.timeout.Milliseconds())
		err := next(ctx, append(slices.Clip(cmds), wait))
		got, werr := wait.Result()
		if werr == nil && got >= int64(h.n) {
			return err
		}
		notRep := fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, h.n, h.timeout)
		if werr != nil {
			notRep = fmt.Errorf("%w: wait: %w", ErrNotReplicated, werr)
		}
		for _, c := range cmds {
			if c.Err() == nil {
				c.SetErr(notRep)
			}
		}
		if err == nil {
			err = notRep
		}
		return err
	}
}

// installWait makes every append pipeline of c wait for cfg.WaitReplicas
// replicas (nothing when it is 0).
func installWait(c redis.UniversalClient, cfg Config) {
	if cfg.WaitReplicas == 0 {
		return
	}
	h := waitHook{n: cfg.WaitReplicas, timeout: cfg.WaitTimeout}
	switch c := c.(type) {
	case *redis.ClusterClient:
		c.OnNewNode(func(n *redis.Client) { n.AddHook(h) })
	default:
		c.AddHook(h)
	}
}
