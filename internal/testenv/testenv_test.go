package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func TestRedisIsFreshPerCall(t *testing.T) {
	ctx := context.Background()
	a, b := Redis(t), Redis(t)
	if a.Addr == b.Addr {
		t.Fatalf("two calls share %s", a.Addr)
	}
	ca := redis.NewClient(&redis.Options{Addr: a.Addr})
	defer ca.Close()
	cb := redis.NewClient(&redis.Options{Addr: b.Addr})
	defer cb.Close()
	if err := ca.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := cb.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("second Redis sees the first one's key: n=%d err=%v", n, err)
	}
}

func TestClickHouseDatabasePerCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr1, db1 := ClickHouse(t)
	addr2, db2 := ClickHouse(t)
	if addr1 != addr2 {
		t.Errorf("one server per binary expected, got %s and %s", addr1, addr2)
	}
	if db1 == db2 {
		t.Fatalf("two calls share database %s", db1)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr1}, Auth: clickhouse.Auth{Database: db1}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE TABLE t (n UInt32) ENGINE = MergeTree ORDER BY n"); err != nil {
		t.Fatal(err)
	}
	var got uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 't'", db2).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 0 {
		t.Fatalf("table created in %s shows up in %s", db1, db2)
	}
}
