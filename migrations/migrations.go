// Package migrations holds the ClickHouse schema as ordered NNNN_name.sql
// files embedded in the binary, and Apply, the runner that brings a database
// up to date and records each applied file in schema_migrations.
//
// Writing a migration: add the next NNNN_name.sql; never edit a file once it
// has been applied anywhere (Apply refuses a changed checksum). Qualify every
// table as ${database}.name: Apply substitutes the target database. Separate
// statements with ';'. Keep to SQL that ClickHouse 18.16 and current
// ClickHouse both accept: no TTL, CODEC, DateTime64, Map, LowCardinality,
// skip indexes, nor ADD COLUMN IF NOT EXISTS. Make statements idempotent
// where the dialect allows (CREATE ... IF NOT EXISTS, DROP ... IF EXISTS):
// a file that fails half-way is re-run from its first statement. A
// non-idempotent statement (ALTER TABLE ... ADD COLUMN) goes alone in its
// own file.
//
// On a cluster (Options.Cluster) the same files are applied rewritten by
// ForCluster (replicated local tables under Distributed ones, ON CLUSTER):
// a statement ForCluster has no rule for is refused, and each file's
// rewrite is pinned by its golden file in testdata/cluster (see
// docs/clickhouse-cluster.md).
package migrations

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed *.sql
var files embed.FS

// Migration is one embedded file.
type Migration struct {
	Version    uint32 // NNNN
	Name       string // file name without .sql, e.g. "0001_pricing_rules"
	Checksum   string // hex SHA-256 of the file
	Statements []string
}

// ErrChecksumMismatch is returned when an applied migration's file changed.
var ErrChecksumMismatch = errors.New("migrations: applied migration was modified")

// LockStaleAfter is the age after which a lock left by a crashed runner is
// broken.
const LockStaleAfter = 10 * time.Minute

const lockTable = "schema_migrations_lock"

var fileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// All returns the embedded migrations in version order.
func All() ([]Migration, error) { return load(files) }

func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: list files: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: file %q is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(data)
		stmts, err := Split(string(data))
		if err != nil {
			return nil, fmt.Errorf("migrations: %s: %w", e.Name(), err)
		}
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migrations: %s holds no statement", e.Name())
		}
		out = append(out, Migration{
			Version:    uint32(v),
			Name:       strings.TrimSuffix(e.Name(), ".sql"),
			Checksum:   hex.EncodeToString(sum[:]),
			Statements: stmts,
		})
	}
	slices.SortFunc(out, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations: %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

// Apply creates database and schema_migrations when missing, then runs, in
// version order, every embedded migration not yet recorded there, recording
// each after its last statement succeeds. It returns the names of the
// migrations it applied (none when the database is up to date). An applied
// migration whose file changed is an error wrapping ErrChecksumMismatch, and
// nothing is applied.
//
// Concurrent runners (two processes starting at once) are serialised by a
// lock: the table ${database}.schema_migrations_lock, whose CREATE succeeds
// for one runner only. The others wait for it (until ctx ends), then find
// the migrations recorded. A lock older than LockStaleAfter, left by a
// crashed runner, is broken.
func Apply(ctx context.Context, conn driver.Conn, database string) (applied []string, err error) {
	return apply(ctx, conn, database, Options{}, files)
}

// Options configures ApplyWith.
type Options struct {
	// Cluster names the cluster (a remote_servers entry of the servers'
	// config, whose servers define the {shard} and {replica} macros and
	// share a ZooKeeper) to create the schema on: every statement runs ON
	// CLUSTER, rewritten by ForCluster; schema_migrations is one
	// ReplicatedMergeTree that every server of the cluster holds a replica
	// of; the lock is taken ON CLUSTER. Default "": one server, the files
	// as written.
	Cluster string
}

// ApplyWith is Apply with options.
func ApplyWith(ctx context.Context, conn driver.Conn, database string, opts Options) (applied []string, err error) {
	return apply(ctx, conn, database, opts, files)
}

func apply(ctx context.Context, conn driver.Conn, database string, opts Options, fsys fs.FS) (applied []string, err error) {
	if !identRE.MatchString(database) {
		return nil, fmt.Errorf("migrations: invalid database name %q", database)
	}
	all, err := load(fsys)
	if err != nil {
		return nil, err
	}
	if all, err = ForCluster(all, opts.Cluster); err != nil {
		return nil, err
	}
	onCluster, engine := "", "MergeTree"
	if opts.Cluster != "" {
		onCluster = " ON CLUSTER " + opts.Cluster
		// One replica set over the whole cluster (no {shard} in the path).
		engine = "ReplicatedMergeTree('/clickhouse/tables/all/" + database + ".schema_migrations', '{shard}-{replica}')"
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+database+onCluster); err != nil {
		return nil, fmt.Errorf("migrations: create database %s: %w", database, err)
	}
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+database+`.schema_migrations`+onCluster+` (
		version    UInt32,
		name       String,
		checksum   String,
		applied_at DateTime('UTC')
	) ENGINE = `+engine+` ORDER BY version`); err != nil {
		return nil, fmt.Errorf("migrations: create schema_migrations: %w", err)
	}
	release, err := lock(ctx, conn, database, onCluster)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := release(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if opts.Cluster != "" {
		// The runner before us may have recorded its migrations on another
		// server: wait until this replica has them.
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+database+".schema_migrations"); err != nil {
			return nil, fmt.Errorf("migrations: sync schema_migrations: %w", err)
		}
	}

	done, err := recorded(ctx, conn, database)
	if err != nil {
		return nil, err
	}
	for _, m := range all {
		if sums, ok := done[m.Version]; ok {
			for _, sum := range sums {
				if sum != m.Checksum {
					return nil, fmt.Errorf("%w: %s has checksum %s, recorded %s", ErrChecksumMismatch, m.Name, m.Checksum, sum)
				}
			}
		}
	}
	log := slog.Default()
	for _, m := range all {
		if _, ok := done[m.Version]; ok {
			continue
		}
		start := time.Now()
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, strings.ReplaceAll(stmt, "${database}", database)); err != nil {
				return applied, fmt.Errorf("migrations: %s statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := record(ctx, conn, database, m); err != nil {
			return applied, err
		}
		log.Info("applied migration", "database", database, "migration", m.Name, "took", time.Since(start))
		applied = append(applied, m.Name)
	}
	return applied, nil
}

// record inserts m's row into schema_migrations. It goes through a batch:
// on ClickHouse 18.16, Exec of INSERT ... VALUES never returns (the server
// waits for data blocks the driver does not send).
func record(ctx context.Context, conn driver.Conn, database string, m Migration) error {
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO `+database+`.schema_migrations (version, name, checksum, applied_at)`)
	if err != nil {
		return fmt.Errorf("migrations: record %s: %w", m.Name, err)
	}
	if err := batch.Append(m.Version, m.Name, m.Checksum, time.Now().UTC()); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("migrations: record %s: %w", m.Name, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("migrations: record %s: %w", m.Name, err)
	}
	return nil
}

// recorded maps version → the checksums recorded for it.
func recorded(ctx context.Context, conn driver.Conn, database string) (map[uint32][]string, error) {
	rows, err := conn.Query(ctx, `SELECT version, checksum FROM `+database+`.schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrations: read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[uint32][]string{}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("migrations: scan schema_migrations: %w", err)
		}
		if !slices.Contains(out[v], sum) {
			out[v] = append(out[v], sum)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrations: read schema_migrations: %w", err)
	}
	return out, nil
}

// lock takes the migration lock: a view whose creation is atomic and whose
// body names the owner and the time it was taken. ClickHouse has no
// transactions; CREATE of an existing table fails for all but one caller.
//
// On a cluster (onCluster is " ON CLUSTER name", else empty) the view is
// created and dropped ON CLUSTER: ZooKeeper's DDL queue orders the
// runners' CREATEs, so all but the first fail on every server.
func lock(ctx context.Context, conn driver.Conn, database, onCluster string) (release func() error, err error) {
	owner := lockOwner()
	table := database + "." + lockTable
	create := fmt.Sprintf(`CREATE VIEW %s%s AS SELECT '%s' AS owner, toDateTime(%d) AS acquired_at`,
		table, onCluster, owner, time.Now().Unix())
	logged := false
	for {
		err := conn.Exec(ctx, create)
		if err == nil {
			break
		}
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 57 { // TABLE_ALREADY_EXISTS (also while another CREATE is in progress)
			return nil, fmt.Errorf("migrations: take lock %s: %w", table, err)
		}
		var holder string
		var since time.Time
		if qerr := conn.QueryRow(ctx, `SELECT owner, acquired_at FROM `+table).Scan(&holder, &since); qerr == nil {
			if time.Since(since) > LockStaleAfter {
				slog.Default().Warn("breaking stale migration lock", "table", table, "owner", holder, "since", since)
				if derr := conn.Exec(ctx, `DROP TABLE IF EXISTS `+table+onCluster); derr != nil {
					return nil, fmt.Errorf("migrations: break stale lock %s: %w", table, derr)
				}
				continue
			}
			if !logged {
				slog.Default().Info("waiting for the migration lock", "table", table, "owner", holder, "since", since)
				logged = true
			}
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("migrations: waiting for lock %s: %w", table, ctx.Err())
		case <-t.C:
		}
	}
	return func() error {
		// Release even when ctx was cancelled meanwhile.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := conn.Exec(rctx, `DROP TABLE IF EXISTS `+table+onCluster); err != nil {
			return fmt.Errorf("migrations: release lock %s: %w", table, err)
		}
		return nil
	}, nil
}

func lockOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
	// The owner is spliced into a string literal.
	return strings.Map(func(r rune) rune {
		if r == '\'' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

// Split cuts a script into statements at ';' outside string literals,
// quoted identifiers and comments, and drops the comments. Empty statements
// are omitted.
func Split(script string) ([]string, error) {
	var (
		out []string
		cur strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == '-' && i+1 < len(script) && script[i+1] == '-':
			for i < len(script) && script[i] != '\n' {
				i++
			}
			cur.WriteByte('\n')
		case c == '/' && i+1 < len(script) && script[i+1] == '*':
			end := strings.Index(script[i+2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += 2 + end + 1
			cur.WriteByte(' ')
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for ; j < len(script); j++ {
				if script[j] == '\\' {
					j++
					continue
				}
				if script[j] == c {
					break
				}
			}
			if j >= len(script) {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			cur.WriteString(script[i : j+1])
			i = j
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out, nil
}
