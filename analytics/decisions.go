package analytics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrDecisionNotFound is returned by DecisionByQuote when no pricing
// decision of the quote is stored (yet: the sink inserts within about a
// second of the quote).
var ErrDecisionNotFound = errors.New("analytics: no pricing decision for this quote")

// Decisions reads the audit trail: the pricing decisions the sink stores in
// table pricing_decisions, one per quote. It is safe for concurrent use.
type Decisions struct {
	conn driver.Conn
}

// NewDecisions returns a reader over conn, whose default database holds the
// migrated tables.
func NewDecisions(conn driver.Conn) *Decisions { return &Decisions{conn: conn} }

// DecisionByQuote returns the decision record of a quote, byte for byte as
// the quotes package published it (auditrecord decodes it).
func (d *Decisions) DecisionByQuote(ctx context.Context, quoteID string) ([]byte, error) {
	if quoteID == "" {
		return nil, fmt.Errorf("%w: empty quote id", ErrDecisionNotFound)
	}
	rows, err := d.conn.Query(ctx, `SELECT record FROM pricing_decisions WHERE quote_id = ? LIMIT 1`, quoteID)
	if err != nil {
		return nil, fmt.Errorf("analytics: query decision of quote %s: %w", quoteID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("analytics: read decision of quote %s: %w", quoteID, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrDecisionNotFound, quoteID)
	}
	var record string
	if err := rows.Scan(&record); err != nil {
		return nil, fmt.Errorf("analytics: scan decision of quote %s: %w", quoteID, err)
	}
	return []byte(record), nil
}

// DecisionsSince calls fn with every decision record of quotes given at or
// after from, in no particular order, until fn returns an error.
func (d *Decisions) DecisionsSince(ctx context.Context, from time.Time, fn func(record []byte) error) error {
	rows, err := d.conn.Query(ctx, `SELECT record FROM pricing_decisions WHERE at >= ?`, from.UTC())
	if err != nil {
		return fmt.Errorf("analytics: query decisions since %s: %w", from.Format(time.RFC3339), err)
	}
	defer rows.Close()
	for rows.Next() {
		var record string
		if err := rows.Scan(&record); err != nil {
			return fmt.Errorf("analytics: scan decision: %w", err)
		}
		if err := fn([]byte(record)); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("analytics: read decisions: %w", err)
	}
	return nil
}
