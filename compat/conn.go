// Package compat owns `make compat`: the proof that the project's
// ClickHouse migrations and queries also run on a current ClickHouse
// release. Our test servers are ClickHouse 18.16; a current release (26.x)
// is reachable here only embedded, as chDB (libchdb.so, loaded through
// chdb-go from CHDB_LIB_PATH). chDB opens no port, so Session adapts it to
// clickhouse-go's driver.Conn, the interface the project's code takes, and
// the project's own functions run unchanged against it.
//
// The adapter reuses clickhouse-go's own pieces where the real driver
// converts values: its client-side parameter binder (`?`, `@name`), its
// Native block codec (query results are read in the Native format, batch
// rows are encoded as a Native block) and its row scanner. They are
// unexported, so they are linked by name (go:linkname) against the pinned
// clickhouse-go version. External tables (clickhouse.WithExternalTable)
// become temporary tables for the statement. ctx is checked before each
// statement; chDB then runs it to its end.
//
// This is a separate Go module so that the main module does not depend on
// chdb-go; importing it needs CHDB_LIB_PATH (chdb-go loads the library in
// its init and panics without it).
package compat

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/chdb-io/chdb-go/chdb"
)

// The real driver's binder, insert-statement parser, scanner and query
// options (clickhouse-go v2.51.0, pinned in go.mod: a rename fails the
// link; check these signatures when upgrading it).

//go:linkname bind github.com/ClickHouse/clickhouse-go/v2.bind
func bind(tz *time.Location, query string, args ...any) (string, error)

//go:linkname extractNormalizedInsertQueryAndColumns github.com/ClickHouse/clickhouse-go/v2.extractNormalizedInsertQueryAndColumns
func extractNormalizedInsertQueryAndColumns(query string) (normalizedQuery string, tableName string, columns []string, err error)

//go:linkname scan github.com/ClickHouse/clickhouse-go/v2.scan
func scan(block *proto.Block, row int, dest ...any) error

//go:linkname queryOptions github.com/ClickHouse/clickhouse-go/v2.queryOptions
func queryOptions(ctx context.Context) clickhouse.QueryOptions

// Session is one chDB session (chDB allows one per process) with its data
// under a directory. It records the text of every statement run through
// its connections, before parameter binding, for the coverage check.
type Session struct {
	mu      sync.Mutex // chDB runs one statement at a time
	extMu   sync.Mutex // held by a statement with external tables
	s       *chdb.Session
	dir     string
	current string // the session's current database (USE)
	files   int

	recMu    sync.Mutex
	executed []string
}

// Open starts the chDB session with its data under dir (which it creates).
func Open(dir string) (*Session, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("compat: %w", err)
	}
	s, err := chdb.NewSession(dir)
	if err != nil {
		return nil, fmt.Errorf("compat: open chDB session in %s: %w", dir, err)
	}
	return &Session{s: s, dir: dir}, nil
}

// Close ends the session; its directory stays.
func (s *Session) Close() { s.s.Close() }

// Executed returns the statements run so far, as the callers wrote them.
func (s *Session) Executed() []string {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return append([]string(nil), s.executed...)
}

func (s *Session) record(query string) {
	s.recMu.Lock()
	s.executed = append(s.executed, query)
	s.recMu.Unlock()
}

// Version is the ClickHouse version of the loaded libchdb.so.
func (s *Session) Version() (string, error) {
	var v string
	err := s.Conn("system").QueryRow(context.Background(), "SELECT version()").Scan(&v)
	return v, err
}

// Conn is a connection whose current database is database, as
// clickhouse.Open with Auth.Database gives.
func (s *Session) Conn(database string) driver.Conn {
	return &conn{s: s, db: database}
}

var exceptionRE = regexp.MustCompile(`(?s)^Code: (\d+)\. (DB::Exception): (.*)$`)

// run runs one statement in database and returns its result in format.
// chDB's errors become *clickhouse.Exception with the server's code, as
// the native protocol reports them.
func (s *Session) run(database, query, format string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if database != "" && database != s.current {
		if _, err := s.query("USE "+database, "CSV"); err != nil {
			return nil, err
		}
		s.current = database
	}
	return s.query(query, format)
}

func (s *Session) query(query, format string) ([]byte, error) {
	res, err := s.s.Query(query, format)
	if err != nil {
		msg := strings.TrimSpace(err.Error())
		if m := exceptionRE.FindStringSubmatch(msg); m != nil {
			code, _ := strconv.Atoi(m[1])
			return nil, &clickhouse.Exception{Code: int32(code), Name: m[2], Message: m[3]}
		}
		return nil, fmt.Errorf("chdb: %s", msg)
	}
	defer res.Free()
	return bytes.Clone(res.Buf()), nil
}

// withTables creates ctx's external tables (clickhouse.WithExternalTable)
// as temporary tables for the length of fn: chDB takes no external data.
func (s *Session) withTables(ctx context.Context, database string, fn func() error) error {
	tables := externalTables(ctx)
	if len(tables) == 0 {
		return fn()
	}
	// Temporary tables are the session's: one statement with external
	// tables at a time (other statements do not name them).
	s.extMu.Lock()
	defer s.extMu.Unlock()
	for _, t := range tables {
		if _, err := s.run(database, "CREATE TEMPORARY TABLE "+t.Name()+" ("+t.Structure()+")", "CSV"); err != nil {
			return fmt.Errorf("compat: external table %s: %w", t.Name(), err)
		}
		defer func() { _, _ = s.run(database, "DROP TEMPORARY TABLE IF EXISTS "+t.Name(), "CSV") }()
		if err := s.insertBlock(database, "INSERT INTO "+t.Name(), t.Block()); err != nil {
			return fmt.Errorf("compat: external table %s: %w", t.Name(), err)
		}
	}
	return fn()
}

// externalTables reads the external tables clickhouse.Context put in ctx
// (an unexported field of clickhouse.QueryOptions).
func externalTables(ctx context.Context) []*ext.Table {
	opts := queryOptions(ctx)
	f := reflect.ValueOf(&opts).Elem().FieldByName("external")
	return *(*[]*ext.Table)(unsafe.Pointer(f.UnsafeAddr()))
}

// insertBlock inserts block with insert (INSERT INTO t (cols)): the block
// is written as a Native file and read back by the file table function,
// since a chDB statement carries no data.
func (s *Session) insertBlock(database, insert string, block *proto.Block) error {
	if block.Rows() == 0 {
		return nil
	}
	var buf chproto.Buffer
	if err := block.Encode(&buf, 0); err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	s.mu.Lock()
	s.files++
	path := filepath.Join(s.dir, fmt.Sprintf("block-%d.native", s.files))
	s.mu.Unlock()
	if err := os.WriteFile(path, buf.Buf, 0o644); err != nil {
		return err
	}
	defer os.Remove(path)
	_, err := s.run(database, insert+" SELECT * FROM file('"+path+"', 'Native')", "CSV")
	return err
}

// decode reads the Native-format result data into its blocks.
func decode(data []byte) ([]*proto.Block, error) {
	r := chproto.NewReader(bytes.NewReader(data))
	var blocks []*proto.Block
	for {
		b := proto.NewBlock()
		b.ServerContext.Timezone = time.UTC
		if err := b.Decode(r, 0); err != nil {
			if errors.Is(err, io.EOF) { // at a block boundary (cut inside one: io.ErrUnexpectedEOF)
				return blocks, nil
			}
			return nil, fmt.Errorf("compat: decode Native result: %w", err)
		}
		if b.Rows() > 0 {
			blocks = append(blocks, b)
		}
	}
}

type conn struct {
	driver.Conn // nil: a method the project does not use panics
	s           *Session
	db          string
}

func (c *conn) Exec(ctx context.Context, query string, args ...any) error {
	c.s.record(query)
	if err := ctx.Err(); err != nil {
		return err
	}
	body, err := bind(time.UTC, query, args...)
	if err != nil {
		return err
	}
	return c.s.withTables(ctx, c.db, func() error {
		_, err := c.s.run(c.db, body, "CSV")
		return err
	})
}

func (c *conn) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	c.s.record(query)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	body, err := bind(time.UTC, query, args...)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = c.s.withTables(ctx, c.db, func() error {
		data, err = c.s.run(c.db, body, "Native")
		return err
	})
	if err != nil {
		return nil, err
	}
	blocks, err := decode(data)
	if err != nil {
		return nil, err
	}
	return &rows{blocks: blocks}, nil
}

func (c *conn) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	rs, err := c.Query(ctx, query, args...)
	if err != nil {
		return &row{err: err}
	}
	return &row{rows: rs.(*rows)}
}

func (c *conn) Select(ctx context.Context, dest any, query string, args ...any) error {
	return errors.New("compat: Select is not supported (the project does not use it)")
}

func (c *conn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	c.s.record(query)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, table, columns, err := extractNormalizedInsertQueryAndColumns(query)
	if err != nil {
		return nil, err
	}
	data, err := c.s.run(c.db, "DESCRIBE TABLE "+table, "Native")
	if err != nil {
		return nil, err
	}
	blocks, err := decode(data)
	if err != nil {
		return nil, err
	}
	types := map[string]string{}
	var insertable []string
	for _, b := range blocks {
		for i := 1; i <= b.Rows(); i++ {
			var name, typ, kind string
			var rest [4]string
			if err := scan(b, i, &name, &typ, &kind, &rest[0], &rest[1], &rest[2], &rest[3]); err != nil {
				return nil, fmt.Errorf("compat: describe %s: %w", table, err)
			}
			types[name] = typ
			if kind == "" || kind == "DEFAULT" {
				insertable = append(insertable, name)
			}
		}
	}
	if len(columns) == 0 {
		columns = insertable
	}
	block := proto.NewBlock()
	block.ServerContext.Timezone = time.UTC
	for _, name := range columns {
		typ, ok := types[name]
		if !ok {
			return nil, &clickhouse.Exception{Code: 16, Name: "DB::Exception", Message: "No such column " + name + " in table " + table}
		}
		if err := block.AddColumn(name, column.Type(typ)); err != nil {
			return nil, err
		}
	}
	return &batch{c: c, insert: "INSERT INTO " + table + " (" + strings.Join(columns, ", ") + ")", block: block}, nil
}

func (c *conn) Ping(ctx context.Context) error { return c.Exec(ctx, "SELECT 1") }

func (c *conn) Close() error { return nil }

type rows struct {
	blocks []*proto.Block
	block  int // index into blocks
	row    int // 1-based row of blocks[block]; 0 before the first Next
}

func (r *rows) Next() bool {
	for r.block < len(r.blocks) {
		if r.row < r.blocks[r.block].Rows() {
			r.row++
			return true
		}
		r.block, r.row = r.block+1, 0
	}
	return false
}

func (r *rows) Scan(dest ...any) error {
	if r.block >= len(r.blocks) || r.row == 0 {
		return sql.ErrNoRows
	}
	return scan(r.blocks[r.block], r.row, dest...)
}

func (r *rows) ScanStruct(any) error {
	return errors.New("compat: ScanStruct is not supported (the project does not use it)")
}

func (r *rows) ColumnTypes() []driver.ColumnType { return nil }

func (r *rows) Totals(...any) error { return sql.ErrNoRows }

func (r *rows) Columns() []string {
	if len(r.blocks) == 0 {
		return nil
	}
	return r.blocks[0].ColumnsNames()
}

func (r *rows) Close() error  { return nil }
func (r *rows) Err() error    { return nil }
func (r *rows) HasData() bool { return len(r.blocks) > 0 }

type row struct {
	err  error
	rows *rows
}

func (r *row) Err() error { return r.err }

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if !r.rows.Next() {
		return sql.ErrNoRows
	}
	return r.rows.Scan(dest...)
}

func (r *row) ScanStruct(any) error {
	return errors.New("compat: ScanStruct is not supported (the project does not use it)")
}

type batch struct {
	c      *conn
	insert string
	block  *proto.Block
	sent   bool
}

func (b *batch) Abort() error { b.sent = true; return nil }

func (b *batch) Append(v ...any) error { return b.block.Append(v...) }

func (b *batch) AppendStruct(any) error {
	return errors.New("compat: AppendStruct is not supported (the project does not use it)")
}

func (b *batch) Column(i int) driver.BatchColumn { return batchColumn{b.block.Columns[i]} }

func (b *batch) Flush() error { return nil }

func (b *batch) Send() error {
	if b.sent {
		return errors.New("compat: batch already sent")
	}
	b.sent = true
	return b.c.s.insertBlock(b.c.db, b.insert, b.block)
}

func (b *batch) IsSent() bool { return b.sent }
func (b *batch) Rows() int    { return b.block.Rows() }

func (b *batch) Columns() []column.Interface { return b.block.Columns }

func (b *batch) Close() error { b.sent = true; return nil }

type batchColumn struct{ c column.Interface }

func (c batchColumn) Append(v any) error    { _, err := c.c.Append(v); return err }
func (c batchColumn) AppendRow(v any) error { return c.c.AppendRow(v) }
