package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/devenv"
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

func TestRedisStoppedAtCleanup(t *testing.T) {
	var pid int
	t.Run("inner", func(t *testing.T) {
		p := Redis(t)
		pid = p.PID()
		if pid == 0 {
			t.Fatal("no pid")
		}
	})
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatalf("redis %d still runs after its test's cleanup", pid)
	}
}

func TestClickHouseDatabasePerCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var addr1, db1 string
	t.Run("first", func(t *testing.T) {
		var addr2, db2 string
		addr1, db1 = ClickHouse(t)
		addr2, db2 = ClickHouse(t)
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
		if n := tablesIn(t, ctx, addr1, db2); n != 0 {
			t.Fatalf("table created in %s shows up in %s", db1, db2)
		}
	})
	// The inner test's cleanup dropped its databases.
	addr, _ := ClickHouse(t)
	if addr != addr1 {
		t.Errorf("server changed from %s to %s", addr1, addr)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", db1).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s survived its test", db1)
	}
}

func tablesIn(t *testing.T, ctx context.Context, addr, db string) uint64 {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ?", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestKafkaWithTopics(t *testing.T) {
	k := KafkaWith(t, devenv.KafkaOptions{Topics: []string{"user-events"}, Partitions: 3})
	conn, err := kafka.Dial("tcp", k.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions("user-events")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("user-events has %d partitions, want 3", len(ps))
	}
}

// recordingTB captures Fatal and Skip instead of ending the real test.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) Skip(args ...any) {
	r.skip = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) SkipNow() {
	r.skip = "SkipNow"
	runtime.Goexit()
}

func TestMissingBinaryFailsWithHint(t *testing.T) {
	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RedisWith(rec, devenv.RedisOptions{Binary: filepath.Join(t.TempDir(), "no-redis-server")})
	}()
	<-done
	if rec.skip != "" {
		t.Fatalf("skipped (%q), must fail", rec.skip)
	}
	if !strings.Contains(rec.fatal, "make deps") {
		t.Fatalf("fatal message %q lacks the make deps hint", rec.fatal)
	}
}

func TestRemoveStaleDirs(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	tests := []struct {
		name      string
		owner     string // owner.pid content; "" = no file
		wantExist bool
	}{
		{name: "dead owner", owner: "2147483646", wantExist: false},
		{name: "live owner", owner: fmt.Sprint(os.Getpid()), wantExist: true},
		{name: "no owner file", owner: "", wantExist: true},
		{name: "garbage owner", owner: "x", wantExist: true},
	}
	dirs := make([]string, len(tests))
	for i, tt := range tests {
		dir, err := os.MkdirTemp("", sharedPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if tt.owner != "" {
			if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(tt.owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dirs[i] = dir
	}
	removeStaleDirs()
	for i, tt := range tests {
		_, err := os.Stat(dirs[i])
		if exists := err == nil; exists != tt.wantExist {
			t.Errorf("%s: exists = %v, want %v", tt.name, exists, tt.wantExist)
		}
	}
}

func TestClickHouseServerIsDedicated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shared, _ := ClickHouse(t)
	own := ClickHouseServer(t)
	if own.Addr == shared {
		t.Fatalf("dedicated server shares the shared one's address %s", shared)
	}
	if err := own.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := own.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{own.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("dedicated server after restart: %v", err)
	}
	// The shared server did not notice.
	if n := tablesIn(t, ctx, shared, "system"); n == 0 {
		t.Fatal("shared server has no system tables")
	}
}
