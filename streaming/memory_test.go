package streaming

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/training"
)

// TestLongMemoryParity: the V2 and V3 rows the forecaster builds from what the
// consumer wrote to Redis equals the training row of the same region and
// minute, for every horizon. The first days of history reach the consumer
// through the backfill (as from ClickHouse), the rest as events through
// Kafka, overlapping the backfill (the rebuild re-reads what the backfill
// covered); a second region has only an hour of events, so its long windows
// are missing and the row says so.
func TestLongMemoryParity(t *testing.T) {
	e := newEnv(t)
	const n = features.MemoryMinutes + 90 // closed minutes of history
	now := time.Now().UTC().Truncate(time.Minute)
	start := now.Add(-n * time.Minute) // minute n (now) is under way
	rng := rand.New(rand.NewPCG(7, 7))
	mins := make([]features.Minute, n+1)
	for i := range mins {
		mins[i] = features.Minute{Start: start.Add(time.Duration(i) * time.Minute), Searches: float64(rng.IntN(4))}
	}
	// The backfill serves minute starts in [from, to) of the first region
	// only, exactly like LoadHistory over demand_minute.
	backfill := func(_ context.Context, from, to time.Time) (map[string][]features.Minute, error) {
		var out []features.Minute
		for _, m := range mins[:n] {
			if !m.Start.Before(from) && m.Start.Before(to) {
				out = append(out, m)
			}
		}
		return map[string][]features.Minute{"mci": out}, nil
	}
	// Events for the last two days (and the minute under way), beyond what
	// the backfill covers; a newcomer region gets an hour.
	// Supply is reported every minute of the last 20 (without any report
	// the consumer leaves supply out, where training rows read 0), after
	// the searches were consumed: topics read at different speeds would
	// otherwise push the window past two-day-old searches.
	var events, supply []ingest.Event
	for i := n - 2*1440; i <= n; i++ {
		if i >= n-20 {
			mins[i].Supply = float64(10 + i%5)
			supply = append(supply, ev("mci", ingest.TypeSupplyUpdate, mins[i].Start, withSupply(mins[i].Supply)))
		}
		for k := range int(mins[i].Searches) {
			events = append(events, ev("mci", ingest.TypeSearch, mins[i].Start.Add(time.Duration(k+1)*time.Second)))
		}
		if i >= n-60 {
			events = append(events, ev("syr", ingest.TypeSearch, mins[i].Start.Add(30*time.Second)))
		}
	}
	e.produce(events...)
	c, _ := e.start(Options{Backfill: backfill}, nil)
	e.waitCommitted(c)
	e.produce(supply...)
	e.waitCommitted(c)

	enc := &features.Encoding{RegionLevels: map[string]float64{"mci": 1.5, "syr": 0.8}, Holidays: features.Calendar{now.Format(time.DateOnly)}}
	got := e.features("mci")
	if !got.Found() {
		t.Fatal("no features for mci")
	}
	prefix := features.PrefixSum(func() []float64 {
		s := make([]float64, n)
		for i, mm := range mins[:n] {
			s[i] = mm.Searches
		}
		return s
	}())
	for _, schema := range []features.Schema{features.V2, features.V3} {
		m := &inference.Model{Schema: schema, Encoding: enc}
		for _, h := range features.Horizons {
			row, scale, warning := m.Row(inference.Request{RegionID: "mci", HorizonMinutes: h, At: now.Add(20 * time.Second), Features: got})
			want := training.LongMemoryRow(schema, mins[:n], prefix, n, h, "mci", enc)
			if !slices.Equal(row, want) || scale != 1 || warning != "" {
				t.Errorf("%s h=%d: serving row\n%v\ntraining row\n%v\n(scale %v, warning %q)", features.Version(schema.Hash()), h, row, want, scale, warning)
			}
		}
	}
	m := &inference.Model{Schema: features.V3, Encoding: enc}
	// A request for 30 minutes is the 15-minute row, scaled by 2.
	if _, scale, _ := m.Row(inference.Request{RegionID: "mci", HorizonMinutes: 30, At: now, Features: got}); scale != 2 {
		t.Errorf("30 min: scale %v, want 2", scale)
	}

	newcomer := e.features("syr")
	row, _, warning := m.Row(inference.Request{RegionID: "syr", HorizonMinutes: 60, At: now, Features: newcomer})
	if warning == "" {
		t.Error("syr: no warning for the missing long-memory windows")
	}
	if i := features.V3.Index(features.DemandWeek3); row[i] != float32(0.8*60) {
		t.Errorf("syr: %s = %v, want the region level 0.8 × 60", features.DemandWeek3, row[i])
	}
	if i := features.V3.Index(features.DemandLast); row[i] != 60 {
		t.Errorf("syr: %s = %v, want the 60 closed minutes of events", features.DemandLast, row[i])
	}
}
