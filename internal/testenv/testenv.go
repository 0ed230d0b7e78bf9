// Package testenv gives integration tests real dependencies: a fresh Redis
// or kfake broker per call and one ClickHouse server per test binary with a
// fresh database per call. A missing server binary fails the test with a
// `make deps` hint; it never skips.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/surgeworks/surge/devenv"
)

const startTimeout = 90 * time.Second

// Main runs the tests, then stops the shared servers and removes their
// data. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	stopShared()
	os.Exit(code)
}

// logger is quiet unless SURGE_TESTENV_LOG=1.
func logger() *slog.Logger {
	if os.Getenv("SURGE_TESTENV_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	err := fmt.Errorf(format, args...)
	if errors.Is(err, devenv.ErrBinaryNotFound) {
		t.Fatalf("%v\n(the integration tests need the real servers: run `make deps`)", err)
	}
	t.Fatal(err)
}

// Redis starts a fresh, non-persistent Redis on a free loopback port with
// its data under t.TempDir(); it is stopped at cleanup.
func Redis(t testing.TB) *devenv.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := devenv.StartRedis(ctx, devenv.RedisOptions{Dir: t.TempDir(), Logger: logger()})
	if err != nil {
		fatalf(t, "testenv: %w", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return p
}

// Kafka starts a fresh kfake broker (6 partitions by default, no topics:
// create them with the client, or use KafkaWith) with its data under
// t.TempDir(); it is stopped at cleanup.
func Kafka(t testing.TB) *devenv.Kafka {
	t.Helper()
	return KafkaWith(t, devenv.KafkaOptions{})
}

// KafkaWith is Kafka with options; Dir defaults to t.TempDir().
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
		fatalf(t, "testenv: %w", err)
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
// server (started on first use) and a database created for this call
// (test_<random>), dropped at cleanup. The server is stopped by Main; if a
// package forgets Main the server still dies with the test binary.
func ClickHouse(t testing.TB) (addr, database string) {
	t.Helper()
	shared.once.Do(startSharedClickHouse)
	shared.mu.Lock()
	p, err := shared.ch, shared.err
	shared.mu.Unlock()
	if err != nil {
		fatalf(t, "testenv: shared clickhouse: %w", err)
	}
	if p == nil {
		t.Fatal("testenv: shared clickhouse already stopped (ClickHouse called after Main's m.Run returned)")
	}

	var raw [6]byte
	_, _ = rand.Read(raw[:])
	database = "test_" + hex.EncodeToString(raw[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec(ctx, p.Addr, "CREATE DATABASE "+database); err != nil {
		fatalf(t, "testenv: %w", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exec(ctx, p.Addr, "DROP DATABASE IF EXISTS "+database); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return p.Addr, database
}

func startSharedClickHouse() {
	dir, err := os.MkdirTemp("", "surge-testenv-clickhouse-")
	if err != nil {
		shared.err = fmt.Errorf("temp dir: %w", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := devenv.StartClickHouse(ctx, devenv.ClickHouseOptions{Dir: dir, Logger: logger()})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.dir = dir
	if err != nil {
		shared.err = err
		return
	}
	shared.ch = p
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

// exec runs one statement as user default on a short-lived connection.
func exec(ctx context.Context, addr, query string) error {
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
