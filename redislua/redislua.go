// Package redislua runs a Lua script in many calls pipelined in one round
// trip: EVALSHA for each, then EVAL for the calls Redis answered NOSCRIPT
// (a restarted server, or another node of a cluster). Only those did not
// run, so none runs twice. The rate limiter and the intake's supply guard
// use it.
package redislua

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Call is one script call: its keys and arguments, and the length of the
// array it answers.
type Call struct {
	Keys    []string
	Args    []any
	Replies int
}

// PerCall is how many items (keys of one slot) a call may carry on rdb:
// max on a single server, 1 on a cluster, whose keys live on many nodes.
func PerCall(rdb redis.UniversalClient, max int) int {
	if _, cluster := rdb.(*redis.ClusterClient); cluster {
		return 1
	}
	return max
}

// Run runs the calls and returns their replies end to end. On an error no
// reply is returned; the calls that ran may have changed their keys.
func Run(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, calls []Call) ([]any, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(calls))
	pipe := rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = s.EvalSha(ctx, pipe, c.Keys, c.Args...)
	}
	_, _ = pipe.Exec(ctx) // the commands carry their errors
	var retry []int
	for i, c := range cmds {
		switch err := c.Err(); {
		case err == nil:
		case strings.HasPrefix(err.Error(), "NOSCRIPT"):
			retry = append(retry, i)
		default:
			return nil, err
		}
	}
	if len(retry) > 0 {
		pipe := rdb.Pipeline()
		for _, i := range retry {
			cmds[i] = s.Eval(ctx, pipe, calls[i].Keys, calls[i].Args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	var out []any
	for i, c := range cmds {
		replies, ok := c.Val().([]any)
		if !ok || len(replies) != calls[i].Replies {
			return nil, fmt.Errorf("unexpected script reply %v", c.Val())
		}
		out = append(out, replies...)
	}
	return out, nil
}
