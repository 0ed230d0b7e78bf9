package analytics

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/features"
)

// HoursPerWeek is the number of hour-of-week slots.
const HoursPerWeek = 168

// HourOfWeek returns the UTC hour-of-week slot of t: Monday 00:00-00:59 UTC
// is 0, Monday 01:00 is 1, …, Sunday 23:00 is 167.
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return (int(t.Weekday())+6)%7*24 + t.Hour()
}

// HistoryOptions configures a History. The zero value is ready to use.
type HistoryOptions struct {
	// BatchSize is the number of rows per INSERT block. Default 10,000.
	BatchSize int
	// Lookback limits HourOfWeekAverages to the minutes after now-Lookback.
	// Default 0: all history.
	Lookback time.Duration
}

// History reads and writes the per-minute demand history (table
// demand_minute, a SummingMergeTree). It is safe for concurrent use.
//
// demand_minute keeps sums only, so that the materialized view from
// events_raw can add to it: counts (searches, bookings, cancels) and, for
// each gauge-like signal (supply, weather, traffic, event), the sum of its
// samples and their number. Reading a minute returns the mean of its samples.
// Rows may be unmerged, so every read aggregates with sum(). A minute whose
// values are all zero is dropped by SummingMergeTree when parts merge, so
// readers treat a missing minute as a minute with zero activity.
type History struct {
	conn driver.Conn
	opts HistoryOptions
	now  func() time.Time
}

// NewHistory returns a History over conn, whose default database holds the
// migrated tables.
func NewHistory(conn driver.Conn, opts HistoryOptions) *History {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 10_000
	}
	return &History{conn: conn, opts: opts, now: time.Now}
}

const demandColumns = `region_id, minute, searches, bookings, cancels,
	supply_sum, supply_samples, weather_sum, weather_samples,
	traffic_sum, traffic_samples, event_sum, event_samples`

// InsertDemandMinutes adds rows to a region's history, in blocks of
// BatchSize rows. Start is truncated to the minute; counts are rounded to
// integers and must be finite and ≥ 0; each gauge value counts as one
// sample. Inserting the same minute twice adds the two (the table sums).
func (h *History) InsertDemandMinutes(ctx context.Context, regionID string, rows []features.Minute) error {
	if regionID == "" {
		return fmt.Errorf("analytics: insert demand minutes: empty region id")
	}
	for i, m := range rows {
		if err := checkMinute(m); err != nil {
			return fmt.Errorf("analytics: insert demand minutes: row %d (%s): %w", i, m.Start.UTC().Format(time.RFC3339), err)
		}
	}
	for lo := 0; lo < len(rows); lo += h.opts.BatchSize {
		hi := min(lo+h.opts.BatchSize, len(rows))
		// The explicit column list is required: on ClickHouse 18.16 a batch
		// without it silently inserts nothing.
		batch, err := h.conn.PrepareBatch(ctx, "INSERT INTO demand_minute ("+demandColumns+")")
		if err != nil {
			return fmt.Errorf("analytics: prepare demand_minute batch: %w", err)
		}
		for _, m := range rows[lo:hi] {
			err := batch.Append(regionID, m.Start.UTC().Truncate(time.Minute),
				uint64(math.Round(m.Searches)), uint64(math.Round(m.Bookings)), uint64(math.Round(m.Cancels)),
				m.Supply, uint64(1), m.Weather, uint64(1), m.Traffic, uint64(1), m.Event, uint64(1))
			if err != nil {
				_ = batch.Abort()
				return fmt.Errorf("analytics: append demand_minute row: %w", err)
			}
		}
		if err := batch.Send(); err != nil {
			return fmt.Errorf("analytics: insert %d demand_minute rows: %w", hi-lo, err)
		}
	}
	return nil
}

func checkMinute(m features.Minute) error {
	if m.Start.IsZero() || m.Start.Unix() < 0 || m.Start.Unix() > math.MaxUint32 {
		return fmt.Errorf("start out of the DateTime range")
	}
	for _, c := range []struct {
		name string
		v    float64
	}{{"searches", m.Searches}, {"bookings", m.Bookings}, {"cancels", m.Cancels}} {
		if math.IsNaN(c.v) || math.IsInf(c.v, 0) || c.v < 0 || c.v > 1e15 {
			return fmt.Errorf("%s = %v: must be finite and ≥ 0", c.name, c.v)
		}
	}
	for _, g := range []struct {
		name string
		v    float64
	}{{"supply", m.Supply}, {"weather", m.Weather}, {"traffic", m.Traffic}, {"event", m.Event}} {
		if math.IsNaN(g.v) || math.IsInf(g.v, 0) {
			return fmt.Errorf("%s = %v: must be finite", g.name, g.v)
		}
	}
	return nil
}

// DemandMinutes returns the stored minutes of a region in [from, to), oldest
// first. Minutes without a row are not filled in (they had no activity);
// gauge values are the mean of the minute's samples, 0 without samples.
func (h *History) DemandMinutes(ctx context.Context, regionID string, from, to time.Time) ([]features.Minute, error) {
	rows, err := h.conn.Query(ctx, `
		SELECT minute,
			sum(searches), sum(bookings), sum(cancels),
			sum(supply_sum), sum(supply_samples),
			sum(weather_sum), sum(weather_samples),
			sum(traffic_sum), sum(traffic_samples),
			sum(event_sum), sum(event_samples)
		FROM demand_minute
		WHERE region_id = ? AND minute >= ? AND minute < ?
		GROUP BY minute
		ORDER BY minute`, regionID, from.UTC(), to.UTC())
	if err != nil {
		return nil, fmt.Errorf("analytics: query demand minutes of %s: %w", regionID, err)
	}
	defer rows.Close()
	var out []features.Minute
	for rows.Next() {
		var (
			minute                              time.Time
			searches, bookings, cancels         uint64
			supply, weather, traffic, event     float64
			supplyN, weatherN, trafficN, eventN uint64
		)
		if err := rows.Scan(&minute, &searches, &bookings, &cancels,
			&supply, &supplyN, &weather, &weatherN, &traffic, &trafficN, &event, &eventN); err != nil {
			return nil, fmt.Errorf("analytics: scan demand minute: %w", err)
		}
		out = append(out, features.Minute{
			Start:    minute.UTC(),
			Searches: float64(searches),
			Bookings: float64(bookings),
			Cancels:  float64(cancels),
			Supply:   mean(supply, supplyN),
			Weather:  mean(weather, weatherN),
			Traffic:  mean(traffic, trafficN),
			Event:    mean(event, eventN),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: read demand minutes of %s: %w", regionID, err)
	}
	return out, nil
}

func mean(sum float64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// RegionWeek is the hour-of-week demand profile of one region.
type RegionWeek struct {
	// PerMinute is the mean number of searches per minute in each
	// hour-of-week slot (see HourOfWeek), 0 where Minutes is 0.
	PerMinute [HoursPerWeek]float64
	// Minutes is the number of minutes of the slot covered by the region's
	// history, i.e. lying between its first and its last stored minute.
	Minutes [HoursPerWeek]int64
	// Mean is the overall mean searches per minute over the covered span.
	Mean float64
}

// HourOfWeekAverages returns, per region, the mean searches per minute for
// each hour-of-week slot: slot 0 is Monday 00:00-00:59 UTC, slot 167 Sunday
// 23:00-23:59 UTC (see HourOfWeek). Minutes between a region's first and last
// stored minute that have no row count as zero searches; slots outside that
// span are 0.
func (h *History) HourOfWeekAverages(ctx context.Context) (map[string][HoursPerWeek]float64, error) {
	weeks, err := h.HourOfWeekProfiles(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string][HoursPerWeek]float64, len(weeks))
	for id, w := range weeks {
		out[id] = w.PerMinute
	}
	return out, nil
}

// HourOfWeekProfiles is HourOfWeekAverages with the coverage of each slot and
// the overall mean, so that callers can tell "no data" from "no demand".
func (h *History) HourOfWeekProfiles(ctx context.Context) (map[string]*RegionWeek, error) {
	// Slot arithmetic on the Unix time keeps the result independent of the
	// server's time zone: 1970-01-01 was a Thursday, i.e. hour 72 of its week.
	query := `
		SELECT region_id,
			toUInt32((intDiv(toUInt32(minute), 3600) + 72) % 168) AS how,
			sum(searches), min(minute), max(minute)
		FROM demand_minute`
	var args []any
	if h.opts.Lookback > 0 {
		query += ` WHERE minute >= ?`
		args = append(args, h.now().Add(-h.opts.Lookback).UTC().Truncate(time.Minute))
	}
	query += ` GROUP BY region_id, how`
	rows, err := h.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("analytics: query hour-of-week sums: %w", err)
	}
	defer rows.Close()
	type span struct {
		first, last time.Time
		sums        [HoursPerWeek]uint64
	}
	spans := map[string]*span{}
	for rows.Next() {
		var (
			region      string
			how         uint32
			sum         uint64
			first, last time.Time
		)
		if err := rows.Scan(&region, &how, &sum, &first, &last); err != nil {
			return nil, fmt.Errorf("analytics: scan hour-of-week sums: %w", err)
		}
		if how >= HoursPerWeek {
			return nil, fmt.Errorf("analytics: hour-of-week slot %d out of range", how)
		}
		s := spans[region]
		if s == nil {
			s = &span{first: first, last: last}
			spans[region] = s
		}
		if first.Before(s.first) {
			s.first = first
		}
		if last.After(s.last) {
			s.last = last
		}
		s.sums[how] += sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: read hour-of-week sums: %w", err)
	}
	out := make(map[string]*RegionWeek, len(spans))
	for region, s := range spans {
		w := &RegionWeek{Minutes: coveredMinutes(s.first, s.last)}
		var total uint64
		var minutes int64
		for i := range HoursPerWeek {
			total += s.sums[i]
			minutes += w.Minutes[i]
			if w.Minutes[i] > 0 {
				w.PerMinute[i] = float64(s.sums[i]) / float64(w.Minutes[i])
			}
		}
		if minutes > 0 {
			w.Mean = float64(total) / float64(minutes)
		}
		out[region] = w
	}
	return out, nil
}

// coveredMinutes counts, per hour-of-week slot, the minutes in
// [first, last] (both minute starts, inclusive).
func coveredMinutes(first, last time.Time) [HoursPerWeek]int64 {
	var out [HoursPerWeek]int64
	first = first.UTC().Truncate(time.Minute)
	end := last.UTC().Truncate(time.Minute).Add(time.Minute) // exclusive
	if !end.After(first) {
		return out
	}
	// Whole weeks contribute 60 minutes to every slot.
	if weeks := int64(end.Sub(first) / (7 * 24 * time.Hour)); weeks > 1 {
		for i := range out {
			out[i] = (weeks - 1) * 60
		}
		first = first.Add(time.Duration(weeks-1) * 7 * 24 * time.Hour)
	}
	for t := first; t.Before(end); {
		next := t.Truncate(time.Hour).Add(time.Hour)
		if next.After(end) {
			next = end
		}
		out[HourOfWeek(t)] += int64(next.Sub(t) / time.Minute)
		t = next
	}
	return out
}
