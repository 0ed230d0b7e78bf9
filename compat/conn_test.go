package compat

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/migrations"
)

// session is the one chDB session of the test binary (chDB allows one per
// process), opened by TestMain.
var session *Session

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "compat-chdb-")
	if err != nil {
		panic(err)
	}
	session, err = Open(dir)
	if err != nil {
		panic(err)
	}
	code := m.Run()
	session.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// migrated returns a connection to a fresh database named for the test,
// brought up to date by the project's migrations.Apply.
func migrated(t *testing.T) (driver.Conn, string) {
	t.Helper()
	db := "t_" + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_"))
	// As analytics.Open and internal/testenv do it: through database default.
	boot := session.Conn("default")
	if err := boot.Exec(t.Context(), "DROP DATABASE IF EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := boot.Exec(t.Context(), "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	conn := session.Conn(db)
	applied, err := migrations.Apply(t.Context(), conn, db)
	if err != nil {
		t.Fatalf("migrations.Apply: %v", err)
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(all) {
		t.Fatalf("applied %d migrations, want %d: %v", len(applied), len(all), applied)
	}
	return conn, db
}

func TestMigrations(t *testing.T) {
	conn, db := migrated(t)
	// A second run finds everything applied.
	applied, err := migrations.Apply(t.Context(), conn, db)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Apply: applied %v, err %v", applied, err)
	}
	// A lock left by a crashed runner (older than LockStaleAfter) is broken.
	stale := fmt.Sprintf("CREATE VIEW %s.schema_migrations_lock AS SELECT 'crashed' AS owner, toDateTime(%d) AS acquired_at",
		db, time.Now().Add(-2*migrations.LockStaleAfter).Unix())
	if err := conn.Exec(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	if applied, err := migrations.Apply(t.Context(), conn, db); err != nil || len(applied) != 0 {
		t.Fatalf("Apply over a stale lock: applied %v, err %v", applied, err)
	}
	v, err := session.Version()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every migration applies on ClickHouse %s (chDB)", v)
}
