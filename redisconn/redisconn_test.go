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

func TestSlot(t *testing.T) {
	tests := []struct {
		key  string
		want int
	}{
		{"123456789", 0x31C3}, // the check value of CRC-16/XMODEM: 12739
		{"", 0},
		{"foo", 12182}, // CLUSTER KEYSLOT foo
		{"{user1000}.following", Slot("user1000")},
		{"{user1000}.followers", Slot("user1000")},
		{"foo{}{bar}", Slot("foo{}{bar}")}, // empty first tag: the whole key
		{"foo{{bar}}zap", Slot("{bar")},    // the tag is what is between the first { and the next }
		{"foo{bar}{zap}", Slot("bar")},
		{"ratelimit:user:{u1}", Slot("u1")},
	}
	for _, tt := range tests {
		if got := Slot(tt.key); got != tt.want {
			t.Errorf("Slot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}

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

// TestPatternSubscriptionAcrossFailover: a PSUBSCRIBE (as the live hub's
// surge:*) on a cluster client hears PUBLISH to channels of every slot, and
// hears them again after the master it was subscribed on is killed.
func TestPatternSubscriptionAcrossFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testenv.RedisCluster(t)
	rdb := New(redis.UniversalOptions{Addrs: c.Addrs()})
	defer rdb.Close()
	ps := rdb.PSubscribe(ctx, "surge:*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	msgs := ps.Channel()
	// hears publishes on channel until one arrives, or fails after 15 s.
	hears := func(channel string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = rdb.Publish(ctx, channel, "x").Err() // fails while the node is down
			select {
			case m := <-msgs:
				if m.Channel == channel {
					return
				}
			case <-tick.C:
			case <-deadline:
				t.Fatalf("no message on %s within 15 s", channel)
			}
		}
	}
	for _, r := range []string{"berlin", "paris", "london", "nyc", "sf"} {
		hears("surge:{" + r + "}")
	}
	// go-redis subscribes on the master of the pattern's own slot.
	m, err := c.Master(ctx, "surge:*")
	if err != nil {
		t.Fatal(err)
	}
	node := redis.NewClient(&redis.Options{Addr: m.Addr})
	defer node.Close()
	if n, err := node.PubSubNumPat(ctx).Result(); err != nil || n != 1 {
		t.Fatalf("PUBSUB NUMPAT on %s: %d %v, want the subscription there", m.Addr, n, err)
	}
	if _, _, err := c.FailMaster(ctx, "surge:*"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"berlin", "paris", "london", "nyc", "sf"} {
		hears("surge:{" + r + "}")
	}
}
