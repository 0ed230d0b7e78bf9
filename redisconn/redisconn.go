// Package redisconn owns how the service connects to Redis: to one server,
// or to a Redis Cluster when it is given several seed addresses (or told
// so), and which hash slot a key is in. Every client of the service is
// built here, so that they all follow a cluster's failovers alike.
package redisconn

import (
	"strings"
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

// Cluster reports whether rdb is a Redis Cluster client, whose multi-key
// commands, scripts and transactions must keep to one hash slot.
func Cluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

// Group splits the indexes 0..n-1 into groups of at most perCall (at least
// 1), in order: on a Redis Cluster (cluster) a group holds only indexes
// whose key(i) is in one hash slot, so that one script call or transaction
// may carry them; on a single server the slot does not matter.
func Group(n int, key func(i int) string, perCall int, cluster bool) [][]int {
	perCall = max(perCall, 1)
	var out [][]int
	open := map[int]int{} // slot → index in out of its group being filled
	for i := range n {
		slot := 0
		if cluster {
			if k := key(i); k != "" {
				slot = Slot(k)
			}
		}
		g, ok := open[slot]
		if !ok || len(out[g]) == perCall {
			g = len(out)
			out = append(out, nil)
			open[slot] = g
		}
		out[g] = append(out[g], i)
	}
	return out
}

// slots is the number of hash slots of a Redis Cluster.
const slots = 16384

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag — what is between its first '{' and the next '}', if that is
// not empty — or else of the whole key, mod 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % slots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum of the cluster specification.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
