package analytics

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Granularity is the bucket size of DemandHistory.
type Granularity int

// The granularities of DemandHistory.
const (
	GranularityMinute Granularity = iota + 1
	GranularityHour
)

// Step is the length of one bucket; 0 for an unknown granularity.
func (g Granularity) Step() time.Duration {
	switch g {
	case GranularityMinute:
		return time.Minute
	case GranularityHour:
		return time.Hour
	}
	return 0
}

func (g Granularity) String() string {
	switch g {
	case GranularityMinute:
		return "minute"
	case GranularityHour:
		return "hour"
	}
	return fmt.Sprintf("Granularity(%d)", int(g))
}

// MaxDemandPoints bounds the buckets one DemandHistory call may span
// (two weeks of minutes, over two years of hours).
const MaxDemandPoints = 20_160

// ErrInvalidRange is returned (wrapped) by DemandHistory for an empty or
// too long range, an unknown granularity or an empty region id: the
// caller's mistake, not the server's.
var ErrInvalidRange = errors.New("invalid demand history request")

// DemandPoint is the demand of one region in one bucket.
type DemandPoint struct {
	// Bucket is the start of the bucket, UTC.
	Bucket time.Time
	// Searches, Bookings and Cancels are the event counts of the bucket.
	Searches, Bookings, Cancels uint64
	// Supply is the mean of the bucket's supply samples (available supply
	// reported by supply updates), 0 when SupplySamples is 0.
	Supply        float64
	SupplySamples uint64
}

// DemandHistory returns a region's demand from demand_minute (kept from the
// raw events by a materialized view, plus any loaded history) in buckets
// of one minute or one hour, oldest first. The range is widened to whole
// buckets: from is rounded down to the start of its bucket and to up to
// the end of its bucket, so every point covers its whole bucket; a to on a
// bucket boundary is exclusive. Buckets without any row are omitted (no
// activity and no supply report). At most MaxDemandPoints buckets may be
// spanned.
func (h *History) DemandHistory(ctx context.Context, regionID string, from, to time.Time, g Granularity) ([]DemandPoint, error) {
	step := g.Step()
	switch {
	case regionID == "":
		return nil, fmt.Errorf("analytics: demand history: %w: empty region id", ErrInvalidRange)
	case step == 0:
		return nil, fmt.Errorf("analytics: demand history: %w: unknown granularity %d", ErrInvalidRange, int(g))
	}
	from = from.UTC().Truncate(step)
	if t := to.UTC().Truncate(step); t.Before(to) {
		to = t.Add(step)
	} else {
		to = t
	}
	if !to.After(from) {
		return nil, fmt.Errorf("analytics: demand history: %w: to must be after from", ErrInvalidRange)
	}
	if n := to.Sub(from) / step; n > MaxDemandPoints {
		return nil, fmt.Errorf("analytics: demand history: %w: %d %s buckets, at most %d", ErrInvalidRange, n, g, MaxDemandPoints)
	}
	if from.Unix() < 0 || to.Unix() > 1<<32-1 {
		return nil, fmt.Errorf("analytics: demand history: %w: outside the years 1970-2106", ErrInvalidRange)
	}
	bucket := "minute"
	if g == GranularityHour {
		bucket = "toStartOfHour(minute)"
	}
	rows, err := h.conn.Query(ctx, `
		SELECT `+bucket+` AS bucket,
			sum(searches), sum(bookings), sum(cancels),
			sum(supply_sum), sum(supply_samples)
		FROM demand_minute
		WHERE region_id = ? AND minute >= ? AND minute < ?
		GROUP BY bucket
		ORDER BY bucket`, regionID, from, to)
	if err != nil {
		return nil, fmt.Errorf("analytics: query demand history of %s: %w", regionID, err)
	}
	defer rows.Close()
	var out []DemandPoint
	for rows.Next() {
		var (
			p      DemandPoint
			supply float64
		)
		if err := rows.Scan(&p.Bucket, &p.Searches, &p.Bookings, &p.Cancels, &supply, &p.SupplySamples); err != nil {
			return nil, fmt.Errorf("analytics: scan demand history: %w", err)
		}
		p.Bucket = p.Bucket.UTC()
		p.Supply = mean(supply, p.SupplySamples)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: read demand history of %s: %w", regionID, err)
	}
	return out, nil
}
