// Package redislua runs a Lua script over many items in few calls,
// pipelined in one round trip: EVALSHA for each call, then EVAL for the
// calls Redis answered NOSCRIPT (a restarted server, or a replica promoted
// by a cluster failover). Only those did not run, so none runs twice. The
// keys of one call must be in one hash slot on a Redis Cluster, so there a
// call carries only items of one slot (redisconn.Slot). The rate limiter
// and the intake's supply guard use it.
package redislua

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/redisconn"
)

// Item is one unit of work of a script: its keys, all in one slot (they
// share a hash tag), and its arguments. It answers one reply.
type Item struct {
	Keys []string
	Args []any
}

// Batch runs s over items in calls of at most perCall items (default 1),
// pipelined in one round trip, and returns one reply per item, in the
// order of items. A call's KEYS are its items' keys end to end, its ARGV
// header followed by its items' arguments end to end; the script answers
// an array of one reply per item. On a Redis Cluster a call carries only
// items of one slot. On an error no reply is returned; the calls that ran
// may have changed their keys.
func Batch(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, header []any, items []Item, perCall int) ([]any, error) {
	groups := group(items, perCall, redisconn.Cluster(rdb))
	calls := make([]call, len(groups))
	for k, g := range groups {
		c := call{args: append([]any(nil), header...), replies: len(g)}
		for _, i := range g {
			c.keys = append(c.keys, items[i].Keys...)
			c.args = append(c.args, items[i].Args...)
		}
		calls[k] = c
	}
	replies, err := run(ctx, rdb, s, calls)
	if err != nil {
		return nil, err
	}
	out := make([]any, len(items))
	n := 0
	for _, g := range groups {
		for _, i := range g {
			out[i] = replies[n]
			n++
		}
	}
	return out, nil
}

// group splits the indexes of items into calls of at most perCall items,
// in order; on a cluster a call holds only items of one slot (that of
// their first key).
func group(items []Item, perCall int, cluster bool) [][]int {
	return redisconn.Group(len(items), func(i int) string {
		if len(items[i].Keys) == 0 {
			return ""
		}
		return items[i].Keys[0]
	}, perCall, cluster)
}

// call is one script call: its keys and arguments, and the length of the
// array it answers.
type call struct {
	keys    []string
	args    []any
	replies int
}

// run runs the calls and returns their replies end to end.
func run(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, calls []call) ([]any, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(calls))
	pipe := rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = s.EvalSha(ctx, pipe, c.keys, c.args...)
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
			cmds[i] = s.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	var out []any
	for i, c := range cmds {
		replies, ok := c.Val().([]any)
		if !ok || len(replies) != calls[i].replies {
			return nil, fmt.Errorf("unexpected script reply %v", c.Val())
		}
		out = append(out, replies...)
	}
	return out, nil
}
