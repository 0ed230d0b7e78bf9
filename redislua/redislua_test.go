package redislua

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/redisconn"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestGroup(t *testing.T) {
	items := func(keys ...string) []Item {
		var out []Item
		for _, k := range keys {
			out = append(out, Item{Keys: []string{k, k + ":pending"}})
		}
		return out
	}
	tests := []struct {
		name    string
		items   []Item
		perCall int
		cluster bool
		want    [][]int
	}{
		{"none", nil, 10, false, nil},
		{"single server, one call", items("{a}", "{b}", "{c}"), 10, false, [][]int{{0, 1, 2}}},
		{"single server, chunks", items("{a}", "{b}", "{c}"), 2, false, [][]int{{0, 1}, {2}}},
		{"zero per call is one", items("{a}", "{b}"), 0, false, [][]int{{0}, {1}}},
		{"cluster, one call per slot", items("{a}", "{b}", "x{a}"), 10, true, [][]int{{0, 2}, {1}}},
		{"cluster, chunks within a slot", items("{a}", "{a}", "{a}", "{b}"), 2, true, [][]int{{0, 1}, {2}, {3}}},
		{"cluster, no keys", []Item{{}, {}}, 10, true, [][]int{{0, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := group(tt.items, tt.perCall, tt.cluster)
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("group = %v, want %v", got, tt.want)
			}
		})
	}
}

// counter increments KEYS[i] by ARGV[1] + ARGV[i+1] and answers the new
// values.
var counter = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('INCRBY', k, tonumber(ARGV[1]) + tonumber(ARGV[i + 1])) end
return out`)

// TestOnCluster checks redisconn.Slot against CLUSTER KEYSLOT for the key
// shapes of the service, then runs a script over keys of many slots on a
// real 3-master cluster (a call with keys of two slots would fail
// CROSSSLOT), and again after a failover: the promoted replica does not
// know the script, and each call runs exactly once all the same.
func TestOnCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testenv.RedisCluster(t)
	rdb := redisconn.New(redis.UniversalOptions{Addrs: c.Addrs()})
	defer rdb.Close()

	keys := []string{"x", "features:{berlin}", "forecast:{berlin}:15", "smoothing:{paris}", "quote:{01a21487-a3e8-7644-ab00-c7f01ac30b58}",
		"booking:{b-1}", "rollout:{demand}", "lock:training", "plaus:supply:{paris}", "plaus:supply:{paris}:pending",
		"dedup:{0a1b2c3d4e5f:ev-17}", "a{", "a}", "{}", "{}x", "é{ü}"}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("ratelimit:user:{u%d}", i), fmt.Sprintf("k%d", i))
	}
	for _, k := range keys {
		want, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redisconn.Slot(k); got != int(want) {
			t.Errorf("redisconn.Slot(%q) = %d, CLUSTER KEYSLOT %d", k, got, want)
		}
	}

	var items []Item
	for i := range 300 {
		items = append(items, Item{Keys: []string{fmt.Sprintf("n:{%d}", i%100)}, Args: []any{i}})
	}
	want := map[string]int64{}
	batch := func(round string) {
		t.Helper()
		replies, err := Batch(ctx, rdb, counter, []any{1000}, items, 50)
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		for i, r := range replies {
			k := items[i].Keys[0]
			want[k] += 1000 + int64(i)
			if r != want[k] {
				t.Fatalf("%s: item %d (key %s) = %v, want %d", round, i, k, r, want[k])
			}
		}
	}
	batch("before the failover")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	_, promoted, err := c.FailMaster(ctx, "n:{0}")
	if err != nil {
		t.Fatal(err)
	}
	node := redis.NewClient(&redis.Options{Addr: promoted.Addr})
	defer node.Close()
	if known, err := node.ScriptExists(ctx, counter.Hash()).Result(); err != nil || known[0] {
		t.Fatalf("the promoted replica knows the script (%v, %v): NOSCRIPT goes untested", known, err)
	}
	// The client finds the promoted master within its reload interval.
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Get(ctx, "n:{0}").Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("n:{0} unreachable 10 s after the failover")
		}
		time.Sleep(50 * time.Millisecond)
	}
	batch("after the failover")
}
