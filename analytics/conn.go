// Package analytics is the service's access to ClickHouse: opening a
// connection (creating the database when missing), loading and reading the
// per-minute demand history, and the in-process cache of hour-of-week demand
// averages used on the hot path.
package analytics

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Options configures Open. The zero value connects to 127.0.0.1:9000 as user
// "default" without a password and uses database "surge".
type Options struct {
	// Addr is host:port of the native protocol. Default "127.0.0.1:9000".
	Addr string
	// Database is created when missing. Default "surge". It must be a plain
	// identifier ([A-Za-z_][A-Za-z0-9_]*).
	Database string
	// Username defaults to "default"; Password to empty.
	Username string
	Password string
	// DialTimeout bounds connecting. Default 5 s.
	DialTimeout time.Duration
	// ReadTimeout bounds each read from the server. Default 60 s.
	ReadTimeout time.Duration
	// Cluster says that Database was created on a cluster (see
	// migrations.Options.Cluster and docs/clickhouse-cluster.md): the
	// connection then inserts into Distributed tables synchronously
	// (insert_distributed_sync=1: an INSERT returns once every shard wrote
	// its part, as the sink's exactly-once rules need) and without block
	// deduplication (insert_deduplicate=0: a replicated table would drop a
	// block equal to one of its last 100, such as two view repairs of the
	// sink that each add one search to the same region and minute).
	// Default false: a lone server, default settings.
	Cluster bool
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:9000"
	}
	if o.Database == "" {
		o.Database = "surge"
	}
	if o.Username == "" {
		o.Username = "default"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	return o
}

// clusterSettings are the connection settings of Options.Cluster.
var clusterSettings = clickhouse.Settings{"insert_distributed_sync": 1, "insert_deduplicate": 0}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidIdentifier reports whether s can be used unquoted as a ClickHouse
// database or table name. Names are interpolated into DDL, so anything else
// is refused.
func ValidIdentifier(s string) bool { return len(s) <= 128 && identRE.MatchString(s) }

// Open connects to ClickHouse, creates opts.Database when it does not exist
// (through a short-lived connection to database "default"), and returns a
// pooled connection whose default database is opts.Database, after a
// successful ping. The caller closes it.
func Open(ctx context.Context, opts Options) (driver.Conn, error) {
	opts = opts.withDefaults()
	if !ValidIdentifier(opts.Database) {
		return nil, fmt.Errorf("analytics: invalid database name %q", opts.Database)
	}
	boot, err := dial(ctx, opts, "default")
	if err != nil {
		return nil, err
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+opts.Database)
	_ = boot.Close()
	if err != nil {
		return nil, fmt.Errorf("analytics: create database %s: %w", opts.Database, err)
	}
	return dial(ctx, opts, opts.Database)
}

func dial(ctx context.Context, opts Options, database string) (driver.Conn, error) {
	var settings clickhouse.Settings
	if opts.Cluster {
		settings = clusterSettings
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol: clickhouse.Native,
		Addr:     []string{opts.Addr},
		Auth: clickhouse.Auth{
			Database: database,
			Username: opts.Username,
			Password: opts.Password,
		},
		DialTimeout: opts.DialTimeout,
		ReadTimeout: opts.ReadTimeout,
		Settings:    settings,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		ClientInfo: clickhouse.ClientInfo{
			Products: []struct{ Name, Version string }{{Name: "surge", Version: "1"}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: open %s/%s: %w", opts.Addr, database, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("analytics: ping %s/%s: %w", opts.Addr, database, err)
	}
	return conn, nil
}
