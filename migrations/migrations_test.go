package migrations

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// connect opens a connection to a fresh database of the test server.
func connect(t *testing.T) (driver.Conn, string) {
	t.Helper()
	addr, db := testenv.ClickHouse(t)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: db}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, db
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func names(ms []Migration) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestApplyTwice(t *testing.T) {
	ctx := ctxT(t)
	conn, db := connect(t)
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 3 {
		t.Fatalf("only %d embedded migrations", len(all))
	}

	applied, err := Apply(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(applied, names(all)) {
		t.Fatalf("first Apply applied %v, want %v", applied, names(all))
	}
	for _, table := range []string{"schema_migrations", "pricing_rules", "models", "model_status", "demand_minute"} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("table %s.%s missing after Apply", db, table)
		}
	}

	applied, err = Apply(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 0 {
		t.Fatalf("second Apply applied %v, want nothing", applied)
	}
	var rows, versions uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(version) FROM "+db+".schema_migrations").Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(len(all)) || versions != uint64(len(all)) {
		t.Fatalf("schema_migrations has %d rows / %d versions, want %d", rows, versions, len(all))
	}
	var lock uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, lockTable).Scan(&lock); err != nil {
		t.Fatal(err)
	}
	if lock != 0 {
		t.Fatal("lock table left behind")
	}
}

func TestApplyConcurrently(t *testing.T) {
	ctx := ctxT(t)
	addr, db := testenv.ClickHouse(t)
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	const runners = 4
	results := make([][]string, runners)
	errs := make([]error, runners)
	var wg sync.WaitGroup
	for i := range runners {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: "default"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Go(func() { results[i], errs[i] = Apply(ctx, conn, db) })
	}
	wg.Wait()
	var union []string
	for i := range runners {
		if errs[i] != nil {
			t.Fatalf("runner %d: %v", i, errs[i])
		}
		union = append(union, results[i]...)
	}
	slices.Sort(union)
	if !slices.Equal(union, names(all)) {
		t.Fatalf("runners applied %v together, want each of %v exactly once", union, names(all))
	}
}

func TestChecksumMismatch(t *testing.T) {
	ctx := ctxT(t)
	conn, db := connect(t)
	v1 := fstest.MapFS{"0001_t.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.t (a UInt8) ENGINE = MergeTree ORDER BY a")}}
	if got, err := apply(ctx, conn, db, Options{}, v1); err != nil || !slices.Equal(got, []string{"0001_t"}) {
		t.Fatalf("apply = %v, %v", got, err)
	}
	edited := fstest.MapFS{
		"0001_t.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.t (a UInt16) ENGINE = MergeTree ORDER BY a")},
		"0002_u.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.u (a UInt8) ENGINE = MergeTree ORDER BY a")},
	}
	got, err := apply(ctx, conn, db, Options{}, edited)
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("apply of an edited migration = %v, %v; want ErrChecksumMismatch", got, err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'u'", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("0002 was applied despite the checksum mismatch of 0001")
	}
}

func TestFailedMigrationIsNotRecorded(t *testing.T) {
	ctx := ctxT(t)
	conn, db := connect(t)
	bad := fstest.MapFS{
		"0001_ok.sql":  {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.ok (a UInt8) ENGINE = MergeTree ORDER BY a")},
		"0002_bad.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.b (a UInt8) ENGINE = MergeTree ORDER BY a; SELEKT 1")},
	}
	got, err := apply(ctx, conn, db, Options{}, bad)
	if err == nil || !slices.Equal(got, []string{"0001_ok"}) {
		t.Fatalf("apply = %v, %v; want [0001_ok] and an error", got, err)
	}
	fixed := fstest.MapFS{
		"0001_ok.sql":  bad["0001_ok.sql"],
		"0002_bad.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS ${database}.b (a UInt8) ENGINE = MergeTree ORDER BY a; SELECT 1")},
	}
	got, err = apply(ctx, conn, db, Options{}, fixed)
	if err != nil || !slices.Equal(got, []string{"0002_bad"}) {
		t.Fatalf("re-apply = %v, %v; want [0002_bad]", got, err)
	}
}

func TestLock(t *testing.T) {
	ctx := ctxT(t)
	conn, db := connect(t)
	if _, err := Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	table := db + "." + lockTable

	// A fresh lock held by someone else makes Apply wait until ctx ends.
	if err := conn.Exec(ctx, fmt.Sprintf("CREATE VIEW %s AS SELECT 'other' AS owner, toDateTime(%d) AS acquired_at", table, time.Now().Unix())); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := Apply(short, conn, db)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply under a held lock = %v, want a deadline error", err)
	}

	// A stale one is broken.
	if err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-LockStaleAfter - time.Minute).Unix()
	if err := conn.Exec(ctx, fmt.Sprintf("CREATE VIEW %s AS SELECT 'crashed' AS owner, toDateTime(%d) AS acquired_at", table, old)); err != nil {
		t.Fatal(err)
	}
	if applied, err := Apply(ctx, conn, db); err != nil || len(applied) != 0 {
		t.Fatalf("Apply over a stale lock = %v, %v", applied, err)
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   fstest.MapFS
	}{
		{"bad name", fstest.MapFS{"1_x.sql": {Data: []byte("SELECT 1")}}},
		{"duplicate version", fstest.MapFS{"0001_a.sql": {Data: []byte("SELECT 1")}, "0001_b.sql": {Data: []byte("SELECT 1")}}},
		{"empty", fstest.MapFS{"0001_a.sql": {Data: []byte("-- nothing\n")}}},
		{"unterminated quote", fstest.MapFS{"0001_a.sql": {Data: []byte("SELECT 'x")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ms, err := load(tc.fs); err == nil {
				t.Fatalf("load = %v, want an error", names(ms))
			}
		})
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"one", "SELECT 1", []string{"SELECT 1"}},
		{"two with trailing", "SELECT 1;\nSELECT 2;\n", []string{"SELECT 1", "SELECT 2"}},
		{"semicolon in string", "SELECT ';' ; SELECT 2", []string{"SELECT ';'", "SELECT 2"}},
		{"escaped quote", `SELECT 'a\';b'; SELECT 2`, []string{`SELECT 'a\';b'`, "SELECT 2"}},
		{"line comment", "-- a; b\nSELECT 1 -- c;\n;", []string{"SELECT 1"}},
		{"block comment", "/* x; y */ SELECT 1", []string{"SELECT 1"}},
		{"quoted identifier", "SELECT 1 AS `a;b`", []string{"SELECT 1 AS `a;b`"}},
		{"only comments", "-- x\n/* y */", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Split(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Split(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
