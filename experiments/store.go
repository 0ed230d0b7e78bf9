package experiments

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// store reads and writes experiment versions in ClickHouse table
// experiments (append-only).
type store struct{ conn driver.Conn }

// latest returns the current version of every experiment, by id.
func (s store) latest(ctx context.Context) ([]Experiment, error) {
	rows, err := s.conn.Query(ctx, `SELECT definition FROM experiments
		ORDER BY id, version DESC LIMIT 1 BY id`)
	if err != nil {
		return nil, fmt.Errorf("experiments: load: %w", err)
	}
	defer rows.Close()
	var out []Experiment
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			return nil, fmt.Errorf("experiments: load: %w", err)
		}
		var e Experiment
		if err := json.Unmarshal([]byte(def), &e); err != nil {
			return nil, fmt.Errorf("experiments: decode a stored definition: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// history returns every version of one experiment, oldest first.
func (s store) history(ctx context.Context, id string) ([]Experiment, error) {
	rows, err := s.conn.Query(ctx, `SELECT definition FROM experiments WHERE id = ? ORDER BY version`, id)
	if err != nil {
		return nil, fmt.Errorf("experiments: history of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Experiment
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			return nil, err
		}
		var e Experiment
		if err := json.Unmarshal([]byte(def), &e); err != nil {
			return nil, fmt.Errorf("experiments: decode a stored definition: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// lastVersion is the highest stored version of an experiment (0: none).
func (s store) lastVersion(ctx context.Context, id string) (uint32, error) {
	var v uint32
	if err := s.conn.QueryRow(ctx, `SELECT max(version) FROM experiments WHERE id = ?`, id).Scan(&v); err != nil {
		return 0, fmt.Errorf("experiments: last version of %s: %w", id, err)
	}
	return v, nil
}

// put appends a version.
func (s store) put(ctx context.Context, e Experiment) error {
	def, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("experiments: encode %s: %w", e.ID, err)
	}
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO experiments (id, version, status, definition, updated_at, updated_by)`)
	if err != nil {
		return fmt.Errorf("experiments: prepare insert: %w", err)
	}
	if err := b.Append(e.ID, e.Version, string(e.Status), string(def), e.UpdatedAt, e.UpdatedBy); err != nil {
		_ = b.Abort()
		return fmt.Errorf("experiments: append %s: %w", e.ID, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("experiments: insert %s v%d: %w", e.ID, e.Version, err)
	}
	return nil
}
