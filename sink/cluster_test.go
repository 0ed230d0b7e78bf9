//go:build chcluster

// This test needs ZooKeeper beside two ClickHouse servers; `make
// test-chcluster` runs it.

package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/migrations"
)

// TestClusterExactlyOnce runs the sink on a cluster of two servers, one
// shard of two replicas or two shards of one: a first sink writes through
// server 1 while three views are detached there (what a server killed in
// the middle of an INSERT leaves: events_raw has the block, those views
// and sink_offsets do not); a second sink, on server 2, reads the block
// again, finds the events (replicated, or on their shard), inserts nothing
// twice and repairs the views; then every event is sent again (resends at
// new offsets) with new ones. Read from either server, the cluster holds
// each event once and views that agree with it.
func TestClusterExactlyOnce(t *testing.T) {
	for _, l := range []struct {
		name             string
		shards, replicas int
	}{{"1x2", 1, 2}, {"2x1", 2, 1}} {
		t.Run(l.name, func(t *testing.T) { testClusterExactlyOnce(t, l.shards, l.replicas) })
	}
}

func testClusterExactlyOnce(t *testing.T, shards, replicas int) {
	ctx := ctxT(t)
	const db = "surge"
	conns := clusterConns(t, ctx, db, shards, replicas, 0)
	k := testenv.KafkaWith(t, kafkaOpts())
	evs := genEvents(3000, 31)
	produceEvents(t, k.Brokers, evs)

	missing := []string{"experiment_metrics_daily_mv", "user_activity_minute_mv", "zz_events_raw_offsets_mv"}
	for _, v := range missing {
		if err := conns[0].Exec(ctx, "DETACH TABLE "+db+"."+v); err != nil {
			t.Fatal(err)
		}
	}
	_, stop := runSink(t, k.Brokers, conns[0], db, Options{GroupID: "cluster"})
	waitFor(t, "events_raw without some views", func() bool { return rawCount(t, ctx, conns[0]) == uint64(len(evs)) })
	stop()
	for _, v := range missing {
		if err := conns[0].Exec(ctx, "ATTACH TABLE "+db+"."+v); err != nil {
			t.Fatal(err)
		}
	}

	s, stop := runSink(t, k.Brokers, conns[1], db, Options{GroupID: "cluster"})
	waitFor(t, "the block read again on server 2", func() bool { return caughtUp(s.Status(), allPartitions) })
	for i, conn := range conns {
		syncAll(t, ctx, conn, db)
		checkExact(t, ctx, conn, evs)
		checkViewsAgree(t, ctx, conn, db)
		var local uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".events_raw_local").Scan(&local); err != nil {
			t.Fatal(err)
		}
		// Replicas hold every row; shards a share (partitions 0, 2 | 1).
		if (shards == 1 && local != uint64(len(evs))) || (shards > 1 && (local == 0 || local == uint64(len(evs)))) {
			t.Errorf("server %d holds %d of the %d rows itself", i+1, local, len(evs))
		}
		t.Logf("server %d: %d events once (%d on the server itself), views agree", i+1, len(evs), local)
	}

	more := genEvents(1000, 32)
	produceEvents(t, k.Brokers, append(evs, more...))
	waitFor(t, "resends and new events", func() bool {
		return rawCount(t, ctx, conns[1]) == uint64(len(evs)+len(more)) && caughtUp(s.Status(), allPartitions)
	})
	stop()
	for _, conn := range conns {
		syncAll(t, ctx, conn, db)
		checkExact(t, ctx, conn, append(evs, more...))
		checkViewsAgree(t, ctx, conn, db)
	}
}

// syncAll waits until conn's server holds every part of every replicated
// table of db that any replica acknowledged.
func syncAll(t *testing.T, ctx context.Context, conn driver.Conn, db string) {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT table FROM system.replicas WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	for _, name := range tables {
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+db+"."+name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterLaggingReplica: replica 2 fetches nothing (SYSTEM STOP
// FETCHES) while a sink writes through replica 1; a sink that then takes
// over on replica 2 must not read replica 2's stale positions (it would
// insert every event again): it waits in SYSTEM SYNC REPLICA, and once
// fetches resume it finds everything and inserts nothing twice.
func TestClusterLaggingReplica(t *testing.T) {
	ctx := ctxT(t)
	const db = "surge"
	// A short read timeout: the sync that waits for replica 1's parts ends
	// every 2 s, and the sink tries again.
	conns := clusterConns(t, ctx, db, 1, 2, 2*time.Second)
	if err := conns[1].Exec(ctx, "SYSTEM STOP FETCHES"); err != nil {
		t.Fatal(err)
	}
	k := testenv.KafkaWith(t, kafkaOpts())
	evs := genEvents(2000, 41)
	produceEvents(t, k.Brokers, evs)
	s, stop := runSink(t, k.Brokers, conns[0], db, Options{GroupID: "lagging"})
	waitFor(t, "the events on replica 1", func() bool {
		return rawCount(t, ctx, conns[0]) == uint64(len(evs)) && caughtUp(s.Status(), allPartitions)
	})
	stop()
	localRows := func() uint64 {
		var n uint64
		if err := conns[1].QueryRow(ctx, "SELECT count() FROM "+db+".events_raw_local").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := localRows(); n != 0 {
		t.Fatalf("replica 2 fetched %d rows with fetches stopped", n)
	}

	s, stop = runSink(t, k.Brokers, conns[1], db, Options{GroupID: "lagging"})
	waitFor(t, "the sink on replica 2 waiting for its replicas", func() bool {
		return strings.Contains(s.Status().LastError, "sync replica")
	})
	if n := localRows(); n != 0 {
		t.Fatalf("replica 2 holds %d rows while its sink waits", n)
	}
	if err := conns[1].Exec(ctx, "SYSTEM START FETCHES"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sink on replica 2 caught up", func() bool { return caughtUp(s.Status(), allPartitions) })
	stop()
	for _, conn := range conns {
		syncAll(t, ctx, conn, db)
		checkExact(t, ctx, conn, evs)
	}
}

// clusterConns starts a cluster "surge" of shards × replicas servers, opens
// a connection to each as the service does (analytics.Open with Cluster;
// readTimeout 0: the default) and applies the migrations on the cluster.
func clusterConns(t *testing.T, ctx context.Context, db string, shards, replicas int, readTimeout time.Duration) []driver.Conn {
	t.Helper()
	var conns []driver.Conn
	for _, s := range testenv.ClickHouseCluster(t, "surge", shards, replicas) {
		conn, err := analytics.Open(ctx, analytics.Options{Addr: s.Addr, Database: db, Cluster: true, ReadTimeout: readTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
	}
	if _, err := migrations.ApplyWith(ctx, conns[0], db, migrations.Options{Cluster: "surge"}); err != nil {
		t.Fatal(err)
	}
	return conns
}
