// Package redisconn owns how the service connects to Redis: to one server,
// or to a Redis Cluster when it is given several seed addresses (or told
// so). Every client of the service is built here, so that they all follow a
// cluster's failovers alike.
package redisconn

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// StateReloadInterval is how often a cluster client reloads the slot map
// (CLUSTER SLOTS, in the background, only while it serves commands). A
// MOVED reply reloads it at once, but a master that died answers nothing:
// until the reload the client keeps dialing it, so this bounds how long
// after a failover the keys of the dead master's slots stay unreachable.
// go-redis's default is 60 s.
const StateReloadInterval = time.Second

// New returns a Redis Cluster client when opts has several Addrs or
// IsClusterMode, a single-server client otherwise (as
// redis.NewUniversalClient). Cluster clients reload their slot map every
// StateReloadInterval and read from masters only: the intake's dedup keys
// and the rate limits need their own writes back, which a replica lags.
func New(opts redis.UniversalOptions) redis.UniversalClient {
	if opts.MasterName == "" && (len(opts.Addrs) > 1 || opts.IsClusterMode) {
		o := opts.Cluster()
		o.ClusterStateReloadInterval = StateReloadInterval
		return redis.NewClusterClient(o)
	}
	return redis.NewUniversalClient(&opts)
}
