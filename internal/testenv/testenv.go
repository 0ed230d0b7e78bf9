// Package testenv gives integration tests real dependencies: a fresh Redis
// or kfake broker per call and one ClickHouse server per test binary with a
// fresh database per call. A missing server binary fails the test with a
// `make deps` hint; it never skips.
//
// Use it from TestMain, so that the shared ClickHouse is stopped and its
// data removed when the tests end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Without Main the server still dies with the test binary (Pdeathsig) and
// the next test binary removes its data directory.
//
// SURGE_TESTENV_LOG=1 logs server starts and stops to stderr;
// SURGE_TESTENV_KEEP=1 keeps the shared ClickHouse data directory.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/surgeworks/surge/devenv"
)

// startTimeout bounds one server start, generous for a loaded 2-core box.
const startTimeout = 90 * time.Second

// sharedPrefix names the shared ClickHouse data directories in os.TempDir().
const sharedPrefix = "surge-testenv-clickhouse-"

// Main runs the tests, then stops the shared servers and removes their
// data. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	stopShared()
	os.Exit(code)
}

// logger is quiet unless SURGE_TESTENV_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("SURGE_TESTENV_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func fatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, devenv.ErrBinaryNotFound) {
		t.Fatalf("testenv: %v\nThe integration tests need the real servers: run `make deps`.", err)
	}
	t.Fatalf("testenv: %v", err)
}

// Redis starts a fresh, non-persistent Redis on a free loopback port with
// its data under t.TempDir(); it is stopped at cleanup. Use Kill and
// Restart on the result for Redis-down tests.
func Redis(t testing.TB) *devenv.Process {
	t.Helper()
	return RedisWith(t, devenv.RedisOptions{})
}

// RedisWith is Redis with options (Persist, a fixed Addr); Dir defaults to
// t.TempDir().
func RedisWith(t testing.TB, opts devenv.RedisOptions) *devenv.Process {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := devenv.StartRedis(ctx, opts)
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return p
}

// RedisCluster starts a fresh Redis Cluster of 3 masters and 3 replicas
// (devenv.StartRedisCluster: non-persistent, 1 s node timeout) on free
// loopback ports with its data under t.TempDir(); it is stopped at
// cleanup. Connect with redisconn.New(redis.UniversalOptions{Addrs:
// c.Addrs()}), which follows a failover within a second; fail a master
// with FailMaster.
func RedisCluster(t testing.TB) *devenv.RedisCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := devenv.StartRedisCluster(ctx, devenv.RedisClusterOptions{Dir: t.TempDir(), Logger: logger()})
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return c
}

// Kafka starts a fresh kfake broker (6 partitions per topic by default, no
// topics: use KafkaWith to create some) with its data under t.TempDir(); it
// is stopped at cleanup.
func Kafka(t testing.TB) *devenv.Kafka {
	t.Helper()
	return KafkaWith(t, devenv.KafkaOptions{})
}

// KafkaWith is Kafka with options (Topics, Partitions, NumBrokers); Dir defaults to
// t.TempDir().
func KafkaWith(t testing.TB, opts devenv.KafkaOptions) *devenv.Kafka {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	k, err := devenv.StartKafka(ctx, opts)
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(k.Stop)
	return k
}

var shared struct {
	once sync.Once
	mu   sync.Mutex
	ch   *devenv.Process
	dir  string
	err  error
}

// ClickHouse returns the native address of the test binary's ClickHouse
// server (started on first use, user "default" without password) and a
// database created for this call, test_<random>, dropped at cleanup.
// Connect with clickhouse.Options{Addr: []string{addr},
// Auth: clickhouse.Auth{Database: database}}; close your connections
// (an open one delays the server's stop by up to 1 s).
func ClickHouse(t testing.TB) (addr, database string) {
	t.Helper()
	shared.once.Do(startSharedClickHouse)
	shared.mu.Lock()
	p, err := shared.ch, shared.err
	shared.mu.Unlock()
	if err != nil {
		fatal(t, fmt.Errorf("shared clickhouse: %w", err))
	}
	if p == nil {
		t.Fatal("testenv: the shared ClickHouse is already stopped (ClickHouse called after m.Run returned)")
	}

	var raw [6]byte
	_, _ = rand.Read(raw[:])
	database = "test_" + hex.EncodeToString(raw[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execSQL(ctx, p.Addr, "CREATE DATABASE "+database); err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := execSQL(ctx, p.Addr, "DROP DATABASE IF EXISTS "+database); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return p.Addr, database
}

// ClickHouseServer starts a dedicated ClickHouse server for this test,
// with its data under t.TempDir(), stopped at cleanup. Use it for failure
// tests that Kill or Restart the server; never Kill the shared one behind
// ClickHouse. Costs about 0.1 s to start and 1 s to stop.
func ClickHouseServer(t testing.TB) *devenv.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: t.TempDir(), Logger: logger()})
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return p
}

func startSharedClickHouse() {
	removeStaleDirs()
	dir, err := os.MkdirTemp("", sharedPrefix)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	if err != nil {
		shared.err = fmt.Errorf("data dir: %w", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: dir, Logger: logger()})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.dir, shared.ch, shared.err = dir, p, err
}

// removeStaleDirs deletes shared data directories whose test binary is
// gone (it was killed, for example by a test timeout, or had no Main); its
// server died with it.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), sharedPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue // not ours, or being created right now
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

func stopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.ch != nil {
		if err := shared.ch.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
		}
		shared.ch = nil
	}
	if shared.dir != "" && os.Getenv("SURGE_TESTENV_KEEP") == "" {
		_ = os.RemoveAll(shared.dir)
		shared.dir = ""
	}
}

// execSQL runs one statement as user default on a short-lived connection.
func execSQL(ctx context.Context, addr, query string) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{addr},
		Auth: clickhouse.Auth{Database: "default", Username: "default"},
	})
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, query); err != nil {
		return fmt.Errorf("clickhouse %s: %s: %w", addr, query, err)
	}
	return nil
}

// ClickHouseCluster starts a ZooKeeper and shards x replicas ClickHouse
// servers forming the cluster named name (see devenv.ClickHouseCluster:
// macros shard 1, 2, ... and replica r1, r2, ...), each on a free loopback
// port with its data under t.TempDir(); all are stopped at cleanup. It
// returns the servers shard by shard, in replica order.
func ClickHouseCluster(t testing.TB, name string, shards, replicas int) []*devenv.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	zk, err := devenv.StartZooKeeper(ctx, devenv.ZooKeeperOptions{Dir: t.TempDir(), Logger: logger()})
	if err != nil {
		fatal(t, err)
	}
	stopAtCleanup(t, zk)
	// Every server's address is in every config: pick them all first,
	// holding each port until all are picked so that no two are the same.
	cluster := &devenv.ClickHouseCluster{Name: name, ZooKeeper: zk.Addr, Shards: make([][]string, shards)}
	var held []net.Listener
	for i := range cluster.Shards {
		for range replicas {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("testenv: %v", err)
			}
			held = append(held, ln)
			cluster.Shards[i] = append(cluster.Shards[i], ln.Addr().String())
		}
	}
	for _, ln := range held {
		ln.Close()
	}
	var out []*devenv.Process
	for _, shard := range cluster.Shards {
		for _, addr := range shard {
			p, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: t.TempDir(), TCPAddr: addr, Cluster: cluster, Logger: logger()})
			if err != nil {
				fatal(t, err)
			}
			stopAtCleanup(t, p)
			out = append(out, p)
		}
	}
	return out
}

func stopAtCleanup(t testing.TB, p *devenv.Process) {
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
}
