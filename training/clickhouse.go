package training

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/features"
)

// LoadOptions configures LoadHistory. A zero field takes the documented
// default.
type LoadOptions struct {
	// Regions to load; default: every region with rows in the window.
	Regions []string
	// Window is how far back from End to read when From is zero; default
	// 28 days.
	Window time.Duration
	// From is the start of the range (inclusive, truncated to the minute);
	// zero: End − Window. With From set, history from any period can be
	// trained on as it is, without shifting it to the present.
	From time.Time
	// End is the end of the range (exclusive, truncated to the minute);
	// default now.
	End time.Time
}

// DefaultWindow is the default training window.
const DefaultWindow = 28 * 24 * time.Hour

// LoadHistory reads the per-minute demand of each region from ClickHouse
// (table demand_minute through analytics.History.DemandMinutes) over
// [From, End), From defaulting to End−Window. A region's history runs
// from its first stored minute in the range to its last one or, with End
// set, to End (the minutes up to an explicit end are known, so the holdout
// ends where the range does); the minutes between without a row had no
// activity and are filled with zeros (demand_minute drops all-zero rows). Regions without rows are left out;
// when none has any, the error wraps ErrNoData and says which regions and
// range were searched and how to load history.
func LoadHistory(ctx context.Context, conn driver.Conn, opts LoadOptions) ([]RegionHistory, error) {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	explicitEnd := !opts.End.IsZero()
	if !explicitEnd {
		opts.End = time.Now()
	}
	end := opts.End.UTC().Truncate(time.Minute)
	from := end.Add(-opts.Window)
	if !opts.From.IsZero() {
		from = opts.From.UTC().Truncate(time.Minute)
	}
	if !from.Before(end) {
		return nil, fmt.Errorf("training: %w: empty range %s .. %s: the start must be before the end",
			ErrNoData, from.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	regions := opts.Regions
	if len(regions) == 0 {
		rows, err := conn.Query(ctx, `SELECT DISTINCT region_id FROM demand_minute WHERE minute >= ? AND minute < ? ORDER BY region_id`, from, end)
		if err != nil {
			return nil, fmt.Errorf("training: list regions in demand_minute: %w", err)
		}
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return nil, fmt.Errorf("training: scan region: %w", err)
			}
			regions = append(regions, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("training: list regions in demand_minute: %w", err)
		}
	}
	h := analytics.NewHistory(conn, analytics.HistoryOptions{})
	var out []RegionHistory
	for _, r := range regions {
		mins, err := h.DemandMinutes(ctx, r, from, end)
		if err != nil {
			return nil, fmt.Errorf("training: load history: %w", err)
		}
		if len(mins) == 0 {
			continue
		}
		if explicitEnd && mins[len(mins)-1].Start.Before(end.Add(-time.Minute)) {
			mins = append(mins, features.Minute{Start: end.Add(-time.Minute)})
		}
		out = append(out, RegionHistory{Region: RegionSpec{ID: r}, Minutes: FillMinutes(mins)})
	}
	if len(out) == 0 {
		which := "any region"
		if len(opts.Regions) > 0 {
			which = "regions " + strings.Join(opts.Regions, ", ")
		}
		return nil, fmt.Errorf("training: %w: ClickHouse demand_minute has no rows for %s between %s and %s (%.1f days): load history with `surge replay --file …` (`surge simulate --history` writes such a file)",
			ErrNoData, which, from.Format(time.RFC3339), end.Format(time.RFC3339), end.Sub(from).Hours()/24)
	}
	return out, nil
}

// FillMinutes returns the minutes from the first to the last of mins
// (sorted, oldest first), one per minute, with a zero minute (no activity,
// zero gauges) where mins has none.
func FillMinutes(mins []features.Minute) []features.Minute {
	if len(mins) == 0 {
		return nil
	}
	first := mins[0].Start.UTC().Truncate(time.Minute)
	last := mins[len(mins)-1].Start.UTC().Truncate(time.Minute)
	out := make([]features.Minute, int(last.Sub(first)/time.Minute)+1)
	for i := range out {
		out[i].Start = first.Add(time.Duration(i) * time.Minute)
	}
	for _, m := range mins {
		i := int(m.Start.UTC().Truncate(time.Minute).Sub(first) / time.Minute)
		m.Start = out[i].Start
		out[i] = m
	}
	return out
}

// Backfill loads the searches per minute of every region with demand in
// [from, to) for the streaming consumer's long-memory features
// (streaming.Options.Backfill); a range without demand is no error.
func Backfill(conn driver.Conn) func(ctx context.Context, from, to time.Time) (map[string][]features.Minute, error) {
	return func(ctx context.Context, from, to time.Time) (map[string][]features.Minute, error) {
		hist, err := LoadHistory(ctx, conn, LoadOptions{From: from, End: to})
		if errors.Is(err, ErrNoData) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		out := make(map[string][]features.Minute, len(hist))
		for _, h := range hist {
			out[h.Region.ID] = h.Minutes
		}
		return out, nil
	}
}
