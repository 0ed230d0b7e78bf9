// Package chtest gives integration tests a migrated ClickHouse database on
// the real test server that internal/testenv runs.
package chtest

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/migrations"
)

// Migrated returns a connection to a fresh, migrated database on the shared
// test server (closed at cleanup), with the server's address and the
// database's name.
func Migrated(t testing.TB) (conn driver.Conn, addr, db string) {
	t.Helper()
	addr, db = testenv.ClickHouse(t)
	return Open(t, addr, db), addr, db
}

// Open connects to database db at addr and applies the migrations; the
// connection is closed at cleanup.
func Open(t testing.TB, addr, db string) driver.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := analytics.Open(ctx, analytics.Options{Addr: addr, Database: db, ReadTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return conn
}
