// Package rules keeps the versioned pricing rules: Store writes and reads
// them in ClickHouse (table pricing_rules, append-only), Cache serves them
// from memory on the hot path and keeps serving the last good set when
// ClickHouse is down, and SeedDefaults installs the demo regions.
package rules

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/pricing"
)

// MaxBackdate is how far in the past a new version's EffectiveFrom may lie
// (clock skew between writers); older is refused with ErrBackdated, because
// it would change what was current at a time whose prices are already
// logged.
const MaxBackdate = time.Minute

// ErrBackdated is returned by Put for an EffectiveFrom too far in the past.
var ErrBackdated = errors.New("rules: effective-from lies in the past")

// Store reads and writes pricing rule versions in ClickHouse (table
// pricing_rules of the connection's default database). Versions are never
// updated or deleted. It is safe for concurrent use; Put calls within one
// process are serialised so that versions are consecutive. Two processes
// putting the same (region, product) at the same instant could pick the same
// version number: readers then take the most recently created row.
type Store struct {
	conn driver.Conn
	mu   sync.Mutex
	now  func() time.Time
}

// NewStore returns a Store over conn, whose default database holds the
// migrated tables.
func NewStore(conn driver.Conn) *Store {
	return &Store{conn: conn, now: time.Now}
}

const ruleColumns = `region_id, region_name, product_type, currency, version, effective_from,
	base_price, min_multiplier, max_multiplier, max_step_per_minute, threshold,
	sensitivity, multiplier_step, price_step`

// Put validates r and stores it as the next version of its (region,
// product): the last version + 1, whatever r.Version says. A zero
// EffectiveFrom means now; a future one schedules the version, a past one
// (beyond MaxBackdate) is refused. Times are kept to the second. actor is
// recorded as created_by. It returns the rule as stored.
func (s *Store) Put(ctx context.Context, r pricing.Rule, actor string) (pricing.Rule, error) {
	if err := r.Validate(); err != nil {
		return pricing.Rule{}, fmt.Errorf("rules: invalid rule: %w", err)
	}
	if len(r.RegionName) > 256 {
		return pricing.Rule{}, fmt.Errorf("rules: invalid rule: %w", &pricing.FieldError{Field: "regionName", Msg: "must be at most 256 characters"})
	}
	now := s.now().UTC()
	if r.EffectiveFrom.IsZero() {
		r.EffectiveFrom = now
	}
	r.EffectiveFrom = r.EffectiveFrom.UTC().Truncate(time.Second)
	if r.EffectiveFrom.Before(now.Add(-MaxBackdate)) {
		return pricing.Rule{}, fmt.Errorf("%w: %s is before now (%s)", ErrBackdated, r.EffectiveFrom.Format(time.RFC3339), now.Format(time.RFC3339))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var last uint32
	if err := s.conn.QueryRow(ctx,
		`SELECT max(version) FROM pricing_rules WHERE region_id = ? AND product_type = ?`,
		r.RegionID, r.ProductType).Scan(&last); err != nil {
		return pricing.Rule{}, fmt.Errorf("rules: last version of %s/%s: %w", r.RegionID, r.ProductType, err)
	}
	r.Version = last + 1
	batch, err := s.conn.PrepareBatch(ctx, `INSERT INTO pricing_rules (`+ruleColumns+`, created_at, created_by)`)
	if err != nil {
		return pricing.Rule{}, fmt.Errorf("rules: prepare insert: %w", err)
	}
	if err := batch.Append(r.RegionID, r.RegionName, r.ProductType, r.Currency, r.Version, r.EffectiveFrom,
		r.BasePrice, r.MinMultiplier, r.MaxMultiplier, r.MaxStepPerMinute, r.Threshold,
		r.Sensitivity, r.MultiplierStep, r.PriceStep, now.Truncate(time.Second), actor); err != nil {
		_ = batch.Abort()
		return pricing.Rule{}, fmt.Errorf("rules: append rule: %w", err)
	}
	if err := batch.Send(); err != nil {
		return pricing.Rule{}, fmt.Errorf("rules: insert %s/%s v%d: %w", r.RegionID, r.ProductType, r.Version, err)
	}
	return r, nil
}

// Current returns, for each (region, product), the highest version whose
// EffectiveFrom is at or before at, ordered by region and product.
func (s *Store) Current(ctx context.Context, at time.Time) ([]pricing.Rule, error) {
	return s.query(ctx, `SELECT `+ruleColumns+` FROM pricing_rules
		WHERE effective_from <= ?
		ORDER BY region_id, product_type, version DESC, created_at DESC
		LIMIT 1 BY region_id, product_type`, at.UTC())
}

// Pending returns the versions that become effective after at and are newer
// than the version current at at, ordered by region, product and version.
func (s *Store) Pending(ctx context.Context, at time.Time) ([]pricing.Rule, error) {
	current, err := s.Current(ctx, at)
	if err != nil {
		return nil, err
	}
	return s.pendingAfter(ctx, at, current)
}

func (s *Store) pendingAfter(ctx context.Context, at time.Time, current []pricing.Rule) ([]pricing.Rule, error) {
	future, err := s.query(ctx, `SELECT `+ruleColumns+` FROM pricing_rules
		WHERE effective_from > ?
		ORDER BY region_id, product_type, version, created_at DESC
		LIMIT 1 BY region_id, product_type, version`, at.UTC())
	if err != nil {
		return nil, err
	}
	cur := make(map[key]uint32, len(current))
	for _, r := range current {
		cur[keyOf(r)] = r.Version
	}
	out := future[:0]
	for _, r := range future {
		if r.Version > cur[keyOf(r)] {
			out = append(out, r)
		}
	}
	return out, nil
}

// History returns every version of every product of a region, ordered by
// product and version.
func (s *Store) History(ctx context.Context, regionID string) ([]pricing.Rule, error) {
	return s.query(ctx, `SELECT `+ruleColumns+` FROM pricing_rules
		WHERE region_id = ?
		ORDER BY product_type, version, created_at DESC
		LIMIT 1 BY product_type, version`, regionID)
}

func (s *Store) query(ctx context.Context, query string, args ...any) ([]pricing.Rule, error) {
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("rules: query pricing_rules: %w", err)
	}
	defer rows.Close()
	var out []pricing.Rule
	for rows.Next() {
		var r pricing.Rule
		if err := rows.Scan(&r.RegionID, &r.RegionName, &r.ProductType, &r.Currency, &r.Version, &r.EffectiveFrom,
			&r.BasePrice, &r.MinMultiplier, &r.MaxMultiplier, &r.MaxStepPerMinute, &r.Threshold,
			&r.Sensitivity, &r.MultiplierStep, &r.PriceStep); err != nil {
			return nil, fmt.Errorf("rules: scan pricing_rules: %w", err)
		}
		r.EffectiveFrom = r.EffectiveFrom.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rules: read pricing_rules: %w", err)
	}
	return out, nil
}

type key struct{ region, product string }

func keyOf(r pricing.Rule) key { return key{r.RegionID, r.ProductType} }
