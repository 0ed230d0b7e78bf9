package redisconn

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestNew: one address is a single server; several addresses, or one
// with IsClusterMode, a cluster client that reaches every master.
func TestNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	single := testenv.Redis(t)
	cluster := testenv.RedisCluster(t)
	tests := []struct {
		name        string
		opts        redis.UniversalOptions
		wantCluster bool
	}{
		{"one server", redis.UniversalOptions{Addrs: []string{single.Addr}}, false},
		{"several seeds", redis.UniversalOptions{Addrs: cluster.Addrs()}, true},
		{"one seed, cluster mode", redis.UniversalOptions{Addrs: cluster.Addrs()[:1], IsClusterMode: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := New(tt.opts)
			defer rdb.Close()
			if _, ok := rdb.(*redis.ClusterClient); ok != tt.wantCluster {
				t.Fatalf("New returned a %T", rdb)
			}
			masters := map[string]bool{}
			for i := range 30 {
				key := fmt.Sprintf("k{%d}", i)
				if err := rdb.Set(ctx, key, i, time.Minute).Err(); err != nil {
					t.Fatalf("SET %s: %v", key, err)
				}
				if tt.wantCluster {
					m, err := cluster.Master(ctx, key)
					if err != nil {
						t.Fatal(err)
					}
					masters[m.Addr] = true
				}
			}
			if tt.wantCluster && len(masters) != 3 {
				t.Errorf("the keys went to %d masters, want 3", len(masters))
			}
		})
	}
}
