//go:build chcluster

// The tests of this file need ZooKeeper (Debian's zookeeper package, run
// on Java) beside two ClickHouse servers; `make test-chcluster` runs them.

package migrations

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
)

const clusterDB = "surge"

// clusterLayouts are the clusters the tests run on: shards x replicas.
var clusterLayouts = []struct {
	name             string
	shards, replicas int
}{{"1x2", 1, 2}, {"2x1", 2, 1}}

// clusterConns starts a cluster of two servers and opens a connection to
// each as the service does (analytics.Open with Cluster).
func clusterConns(t *testing.T, ctx context.Context, shards, replicas int) ([]*devenv.Process, []driver.Conn) {
	start := time.Now()
	servers := testenv.ClickHouseCluster(t, goldenCluster, shards, replicas)
	t.Logf("ZooKeeper and %d x %d ClickHouse servers started in %v", shards, replicas, time.Since(start).Round(time.Millisecond))
	var conns []driver.Conn
	for _, s := range servers {
		conn, err := analytics.Open(ctx, analytics.Options{Addr: s.Addr, Database: clusterDB, Cluster: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
	}
	return servers, conns
}

// TestClusterMigrationsAndReplicatedInserts applies the migrations ON
// CLUSTER from both servers at once, on one shard of two replicas and on
// two shards of one, and inserts through the Distributed tables.
func TestClusterMigrationsAndReplicatedInserts(t *testing.T) {
	for _, l := range clusterLayouts {
		t.Run(l.name, func(t *testing.T) { testClusterMigrations(t, l.shards, l.replicas) })
	}
}

func testClusterMigrations(t *testing.T, shards, replicas int) {
	ctx := ctxT(t)
	servers, conns := clusterConns(t, ctx, shards, replicas)
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}

	// Both servers migrate at once: the ON CLUSTER lock lets one apply
	// everything, the other then finds it recorded.
	start := time.Now()
	var wg sync.WaitGroup
	results := make([][]string, len(conns))
	errs := make([]error, len(conns))
	for i, conn := range conns {
		wg.Go(func() { results[i], errs[i] = ApplyWith(ctx, conn, clusterDB, Options{Cluster: goldenCluster}) })
	}
	wg.Wait()
	t.Logf("migrations applied ON CLUSTER in %v", time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			// A server that died (see StartZooKeeper) says why in its error log.
			for _, s := range servers {
				b, _ := os.ReadFile(s.Dir + "/log/clickhouse-server.err.log")
				t.Logf("%s:\n%s", s.Dir, b)
			}
			t.Fatalf("server %d: %v", i+1, err)
		}
	}
	applied := slices.Concat(results...)
	slices.Sort(applied)
	if !slices.Equal(applied, names(all)) {
		t.Fatalf("applied %v and %v, want each migration once: %v", results[0], results[1], names(all))
	}
	for i, conn := range conns {
		if got, err := ApplyWith(ctx, conn, clusterDB, Options{Cluster: goldenCluster}); err != nil || len(got) != 0 {
			t.Fatalf("server %d, second run: applied %v, %v; want nothing", i+1, got, err)
		}
	}

	// Every server has the whole schema: local replicated tables, a
	// Distributed table over each, the views, one record per migration.
	wantEngines := map[string]string{
		"schema_migrations":        "ReplicatedMergeTree",
		"events_raw":               "Distributed",
		"events_raw_local":         "ReplicatedMergeTree",
		"sink_offsets":             "Distributed",
		"sink_offsets_local":       "ReplicatedReplacingMergeTree",
		"demand_minute_local":      "ReplicatedSummingMergeTree",
		"experiment_results_local": "ReplicatedMergeTree",
		"api_keys":                 "Distributed",
		"demand_minute_mv":         "MaterializedView",
		"zz_events_raw_offsets_mv": "MaterializedView",
	}
	for i, conn := range conns {
		engines := map[string]string{}
		rows, err := conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", clusterDB)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, engine string
			if err := rows.Scan(&name, &engine); err != nil {
				t.Fatal(err)
			}
			engines[name] = engine
		}
		rows.Close()
		for name, want := range wantEngines {
			if engines[name] != want {
				t.Errorf("server %d: %s has engine %q, want %s", i+1, name, engines[name], want)
			}
		}
		if _, ok := engines["events_raw_offsets_mv"]; ok {
			t.Errorf("server %d: events_raw_offsets_mv survived 0008's DROP ON CLUSTER", i+1)
		}
		if n := len(engines); n != 39 {
			t.Errorf("server %d: %d tables, want 39 (schema_migrations, 15 tables x 2, 8 views): %v", i+1, n, engines)
		}
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+clusterDB+".schema_migrations"); err != nil {
			t.Fatal(err)
		}
		var recorded uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+clusterDB+".schema_migrations").Scan(&recorded); err != nil {
			t.Fatal(err)
		}
		if recorded != uint64(len(all)) {
			t.Errorf("server %d: schema_migrations holds %d rows, want %d", i+1, recorded, len(all))
		}
	}

	// Two blocks inserted through server 1's Distributed events_raw, one
	// search each in the same region and minute: both count when read
	// from server 2, in events_raw, in demand_minute (the view ran where
	// the block landed) and in sink_offsets.
	minute := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for off := uint64(1); off <= 2; off++ {
		insertSearch(t, ctx, conns[0], "r-sync", minute, off)
	}
	syncReplica(t, ctx, conns[1], "events_raw_local", "demand_minute_local", "sink_offsets_local")
	if n := count(t, ctx, conns[1], "SELECT count() FROM events_raw WHERE region_id = 'r-sync'"); n != 2 {
		t.Errorf("server 2 events_raw: %d rows, want 2", n)
	}
	if n := count(t, ctx, conns[1], "SELECT sum(searches) FROM demand_minute WHERE region_id = 'r-sync'"); n != 2 {
		t.Errorf("server 2 demand_minute: %d searches, want 2", n)
	}
	if n := count(t, ctx, conns[1], "SELECT max(max_offset) FROM sink_offsets WHERE kafka_topic = 'r-sync'"); n != 2 {
		t.Errorf("server 2 sink_offsets: max offset %d, want 2", n)
	}

	// 0010's columns (the Distributed table re-created over the altered
	// local one) on every server: a row written without them, as before
	// 0010, reads them from its JSON record, from the other server too.
	legacy, err := conns[0].PrepareBatch(ctx, "INSERT INTO pricing_decisions (quote_id, at, record, kafka_topic, kafka_partition, kafka_offset)")
	if err != nil {
		t.Fatal(err)
	}
	if err := legacy.Append("q-legacy", minute, `{"forecast":{"horizonMinutes":15,"demand":42.5,"generatedAt":"2026-12-01T10:00:00Z"}}`,
		"pricing-decisions", uint32(0), uint64(1)); err != nil {
		t.Fatal(err)
	}
	if err := legacy.Send(); err != nil {
		t.Fatal(err)
	}
	syncReplica(t, ctx, conns[1], "pricing_decisions_local")
	for i, conn := range conns {
		var (
			h      uint32
			demand float64
			at     time.Time
		)
		if err := conn.QueryRow(ctx, "SELECT horizon_minutes, forecast_demand, forecast_at FROM pricing_decisions WHERE quote_id = 'q-legacy'").
			Scan(&h, &demand, &at); err != nil {
			t.Fatalf("server %d: %v", i+1, err)
		}
		if h != 15 || demand != 42.5 || !at.Equal(minute) {
			t.Errorf("server %d: legacy decision reads horizon %d, demand %v, at %s", i+1, h, demand, at)
		}
	}

	// Why analytics.Options.Cluster turns insert_deduplicate off: by
	// default a replicated table drops a block whose hash it saw among its
	// last 100, and blocks can be equal without being the same data: two
	// view repairs (package sink) that each add one search to the same
	// region and minute. The sink's own rules already keep its inserts
	// exactly once. 18.16 does not deduplicate the blocks a materialized
	// view writes, though: two different events whose demand_minute blocks
	// are equal count twice with the default settings too.
	plain, err := clickhouse.Open(&clickhouse.Options{Addr: []string{servers[0].Addr}, Auth: clickhouse.Auth{Database: clusterDB}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	syncCtx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	for off := uint64(1); off <= 2; off++ {
		insertSearch(t, syncCtx, plain, "r-views", minute, off)
	}
	syncReplica(t, ctx, conns[1], "events_raw_local", "demand_minute_local")
	if n := count(t, ctx, conns[1], "SELECT sum(searches) FROM demand_minute WHERE region_id = 'r-views'"); n != 2 {
		t.Errorf("default settings: two events in equal view blocks add %d searches to demand_minute, want 2", n)
	}
	for _, c := range []struct {
		conn   driver.Conn
		region string
		want   uint64
	}{{plain, "r-default", 1}, {conns[0], "r-cluster", 2}} {
		for range 2 {
			if err := c.conn.Exec(ctx, "INSERT INTO demand_minute_local (region_id, minute, searches) SELECT ?, ?, 1", c.region, minute); err != nil {
				t.Fatal(err)
			}
		}
		syncReplica(t, ctx, conns[1], "demand_minute_local")
		if n := count(t, ctx, conns[1], "SELECT sum(searches) FROM demand_minute WHERE region_id = '"+c.region+"'"); n != c.want {
			t.Errorf("%s: two equal blocks add %d searches, want %d", c.region, n, c.want)
		}
	}
}

// insertSearch inserts one search at offset off of topic region (one block).
func insertSearch(t *testing.T, ctx context.Context, conn driver.Conn, region string, minute time.Time, off uint64) {
	t.Helper()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, kafka_topic, kafka_partition, kafka_offset)")
	if err != nil {
		t.Fatal(err)
	}
	at := minute.Add(time.Duration(off) * time.Second)
	if err := batch.Append(fmt.Sprintf("%s-%d", region, off), "search", region, at, at, region, uint32(0), off); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

func syncReplica(t *testing.T, ctx context.Context, conn driver.Conn, tables ...string) {
	t.Helper()
	for _, table := range tables {
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+clusterDB+"."+table); err != nil {
			t.Fatal(err)
		}
	}
}

func count(t *testing.T, ctx context.Context, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
