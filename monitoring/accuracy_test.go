package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/pricing"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func migrated(t *testing.T) driver.Conn {
	t.Helper()
	conn, _, _ := chtest.Migrated(t)
	return conn
}

// decision has the shape of the quotes package's audit record (the fields
// that matter here, in its order: input before forecast).
type decision struct {
	QuoteID      string             `json:"quoteId"`
	At           time.Time          `json:"at"`
	RegionID     string             `json:"regionId"`
	ProductType  string             `json:"productType"`
	Input        pricing.Input      `json:"input"`
	Forecast     inference.Forecast `json:"forecast"`
	ModelVersion string             `json:"modelVersion,omitempty"`
	Multiplier   float64            `json:"surgeMultiplier"`
}

type fcRow struct {
	region, version string
	source          inference.Source
	generated       time.Time
	horizon         int
	demand          float64
}

// insertForecasts writes rows as the sink does: the even ones as records
// of before December 2026 (JSON, written before migration 0010 added the
// forecast columns, whose defaults read them from the JSON), the odd ones as
// today (CBOR, the columns set).
func insertForecasts(t *testing.T, conn driver.Conn, rows []fcRow) {
	t.Helper()
	ctx := ctxT(t)
	legacy, err := conn.PrepareBatch(ctx, `INSERT INTO pricing_decisions
		(quote_id, at, region_id, product_type, model_version, forecast_source, record, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	current, err := conn.PrepareBatch(ctx, `INSERT INTO pricing_decisions
		(quote_id, at, region_id, product_type, model_version, forecast_source, horizon_minutes, forecast_demand, forecast_at,
		record, kafka_topic, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		at := r.generated.Add(200 * time.Millisecond)
		id := "q-" + r.region + "-" + r.generated.UTC().Format(time.RFC3339Nano)
		d := decision{
			QuoteID: id, At: at, RegionID: r.region, ProductType: "ride",
			// A different DemandForecast proves the forecast's "demand" is read.
			Input: pricing.Input{DemandForecast: 12345, HorizonMinutes: 999},
			Forecast: inference.Forecast{RegionID: r.region, HorizonMinutes: r.horizon, Demand: r.demand,
				Lower: r.demand * 0.9, Upper: r.demand * 1.1, ModelVersion: r.version, Source: r.source, GeneratedAt: r.generated},
			ModelVersion: r.version, Multiplier: 1.2,
		}
		if i%2 == 0 {
			rec, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			err = legacy.Append(id, at.UTC(), r.region, "ride", r.version, string(r.source), string(rec),
				"pricing-decisions", uint32(0), uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		rec, err := auditrecord.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		err = current.Append(id, at.UTC(), r.region, "ride", r.version, string(r.source),
			uint32(r.horizon), r.demand, r.generated.UTC(), string(rec), "pricing-decisions", uint32(0), uint64(i))
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []driver.Batch{legacy, current} {
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
}

// insertSearches gives region `per` searches in each of the n minutes from start.
func insertSearches(t *testing.T, h *analytics.History, region string, start time.Time, n int, per float64) {
	t.Helper()
	rows := make([]features.Minute, n)
	for i := range rows {
		rows[i] = features.Minute{Start: start.Add(time.Duration(i) * time.Minute), Searches: per}
	}
	if err := h.InsertDemandMinutes(ctxT(t), region, rows); err != nil {
		t.Fatal(err)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

var (
	now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at  = func(hh, mm, ss int) time.Time { return time.Date(2026, 11, 25, hh, mm, ss, 0, time.UTC) }
)

// fixture loads the hand-made history:
//
//	berlin v1, 10:00 (two quotes, 90 and 110 → 100) vs 10:01-10:05 at 16/min = 80: |e| 20, ape 0.25
//	berlin v1, 10:10 (generatedAt in +01:00) 60 vs 10:11-10:15 at 12 = 60: ape 0
//	berlin v2, 10:20 45 vs 10:21-10:25 at 10 = 50: ape 0.1, e −5
//	berlin v2, 10:30 3 vs 10:31 at 2 = 2: below the MAPE minimum, e +1
//	paris  v1, 10:00 100 vs 10:01-10:05 at 10 = 50: ape 1.0
//	excluded: berlin v1 CACHED and HISTORICAL_AVERAGE at 10:40; berlin v1 at
//	11:55 (horizon ends 12:00, after the last demand minute 11:58)
func fixture(t *testing.T) (driver.Conn, *analytics.History) {
	conn := migrated(t)
	h := analytics.NewHistory(conn, analytics.HistoryOptions{})
	insertSearches(t, h, "berlin", at(10, 1, 0), 5, 16)
	insertSearches(t, h, "berlin", at(10, 11, 0), 5, 12)
	insertSearches(t, h, "berlin", at(10, 21, 0), 5, 10)
	insertSearches(t, h, "berlin", at(10, 31, 0), 1, 2)
	insertSearches(t, h, "berlin", at(10, 41, 0), 5, 10)
	insertSearches(t, h, "paris", at(10, 1, 0), 5, 10)
	insertSearches(t, h, "paris", at(11, 58, 0), 1, 1)
	cet := time.FixedZone("CET", 3600)
	insertForecasts(t, conn, []fcRow{
		{"berlin", "v1", inference.SourceModel, at(10, 0, 10).Add(123456789), 5, 90},
		{"berlin", "v1", inference.SourceModel, at(10, 0, 50), 5, 110},
		{"berlin", "v1", inference.SourceModel, at(10, 10, 30).In(cet), 5, 60},
		{"berlin", "v2", inference.SourceModel, at(10, 20, 0), 5, 45},
		{"berlin", "v2", inference.SourceModel, at(10, 30, 59), 5, 3},
		{"paris", "v1", inference.SourceModel, at(10, 0, 5), 5, 100},
		{"berlin", "v1", inference.SourceCached, at(10, 40, 0), 5, 1000},
		{"berlin", "v1", inference.SourceHistoricalAverage, at(10, 40, 1), 5, 1000},
		{"berlin", "v1", inference.SourceModel, at(11, 55, 0), 5, 1000},
	})
	return conn, h
}

func newAccuracy(t *testing.T, conn driver.Conn, opts Options, clock time.Time) *Accuracy {
	t.Helper()
	a, err := New(conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return clock }
	return a
}

func TestComputeJoinsForecastsWithRealisedDemand(t *testing.T) {
	conn, _ := fixture(t)
	type want struct {
		region, version  string
		n, nmape         int
		mape, wape, bias float64
		alert            bool
	}
	berlinV1 := want{"berlin", "v1", 2, 2, 0.125, 20.0 / 140, 20.0 / 140, false}
	berlinV2 := want{"berlin", "v2", 2, 1, 0.1, 6.0 / 52, -4.0 / 52, false}
	parisV1 := want{"paris", "v1", 1, 1, 1.0, 50.0 / 50, 50.0 / 50, true}
	tests := []struct {
		name  string
		clock time.Time
		q     Query
		want  []want
	}{
		{"all", now, Query{}, []want{berlinV1, berlinV2, parisV1}},
		{"region", now, Query{RegionID: "paris"}, []want{parisV1}},
		{"version", now, Query{ModelVersion: "v2"}, []want{berlinV2}},
		{"region and version", now, Query{RegionID: "berlin", ModelVersion: "v1"}, []want{berlinV1}},
		{"since", now, Query{Since: at(10, 5, 0)}, []want{{"berlin", "v1", 1, 1, 0, 0, 0, false}, berlinV2}},
		// An hour later the 11:55 forecast's horizon has passed, but
		// demand_minute stops at 11:58: still incomplete.
		{"demand not yet arrived", now.Add(time.Hour), Query{}, []want{berlinV1, berlinV2, parisV1}},
		// The 10:00 horizons (10:01-10:05) end at 10:06 and count after
		// the settle time (1 min), at 10:07; the later ones not yet.
		{"horizon complete", at(10, 7, 0), Query{}, []want{
			{"berlin", "v1", 1, 1, 0.25, 0.25, 0.25, true}, {"paris", "v1", 1, 1, 1, 1, 1, true}}},
		{"within settle time", at(10, 6, 59), Query{}, nil},
		{"unknown region", now, Query{RegionID: "tokyo"}, nil},
		{"window excludes everything", now.Add(48 * time.Hour), Query{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAccuracy(t, conn, Options{}, tc.clock)
			got, err := a.Compute(ctxT(t), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d results %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.RegionID != w.region || g.ModelVersion != w.version || g.N != w.n || g.NMAPE != w.nmape ||
					!near(g.MAPE, w.mape) || !near(g.WAPE, w.wape) || !near(g.Bias, w.bias) ||
					g.Alert != w.alert || g.Threshold != DefaultThreshold {
					t.Errorf("result %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestMAPEForRollout(t *testing.T) {
	conn, _ := fixture(t)
	a := newAccuracy(t, conn, Options{}, now)
	tests := []struct {
		version string
		since   time.Time
		mape    float64
		samples int
	}{
		{"v1", time.Time{}, (0.25 + 0 + 1.0) / 3, 3}, // berlin and paris
		{"v2", time.Time{}, 0.1, 1},                  // the 2-search point does not count
		{"v1", at(10, 5, 0), 0, 1},
		{"v3", time.Time{}, 0, 0},
	}
	for _, tc := range tests {
		mape, n, err := a.MAPE(ctxT(t), "demand", tc.version, tc.since)
		if err != nil {
			t.Fatal(err)
		}
		if !near(mape, tc.mape) || n != tc.samples {
			t.Errorf("MAPE(%s, since %v) = %v over %d, want %v over %d", tc.version, tc.since, mape, n, tc.mape, tc.samples)
		}
	}
	if _, _, err := a.MAPE(ctxT(t), "demand", "", time.Time{}); err == nil {
		t.Error("MAPE of an empty version: no error")
	}
}

func TestRefreshExportsMetricsAndAlerts(t *testing.T) {
	conn, h := fixture(t)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	a := newAccuracy(t, conn, Options{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, now)
	ctx := ctxT(t)
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// berlin over both versions: (0.25 + 0 + 0.1)/3 ≈ 0.117 ≤ 0.2; paris 1.0.
	checks := func(step string, berlinV2, berlinAlert float64) {
		t.Helper()
		for _, c := range []struct {
			name      string
			got, want float64
		}{
			{"mape berlin v1", testutil.ToFloat64(a.mape.WithLabelValues("berlin", "v1")), 0.125},
			{"mape berlin v2", testutil.ToFloat64(a.mape.WithLabelValues("berlin", "v2")), berlinV2},
			{"mape paris v1", testutil.ToFloat64(a.mape.WithLabelValues("paris", "v1")), 1},
			{"alert berlin", testutil.ToFloat64(a.alert.WithLabelValues("berlin")), berlinAlert},
			{"alert paris", testutil.ToFloat64(a.alert.WithLabelValues("paris")), 1},
		} {
			if !near(c.got, c.want) {
				t.Errorf("%s: %s = %v, want %v", step, c.name, c.got, c.want)
			}
		}
	}
	checks("first refresh", 0.1, 0)
	if n, err := testutil.GatherAndCount(reg, "surge_forecast_mape", "surge_forecast_accuracy_alert"); err != nil || n != 5 {
		t.Errorf("gathered %d series (%v), want 5", n, err)
	}
	if !strings.Contains(logs.String(), "forecast accuracy alert") || !strings.Contains(logs.String(), "region=paris") ||
		strings.Contains(logs.String(), "region=berlin") {
		t.Errorf("logs after the first refresh:\n%s", logs.String())
	}

	// A bad berlin v2 forecast: 200 against 50 (ape 3): berlin's MAPE is
	// (0.25 + 0 + 0.1 + 3)/4 = 0.8375, v2's (0.1 + 3)/2 = 1.55.
	insertForecasts(t, conn, []fcRow{{"berlin", "v2", inference.SourceModel, at(10, 40, 0), 5, 200}})
	logs.Reset()
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checks("second refresh", 1.55, 1)
	if got := logs.String(); strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, "region=berlin") {
		t.Errorf("want one warning, for berlin (paris was already alerting):\n%s", got)
	}
	if !a.Alerting("berlin") || !a.Alerting("paris") || a.Alerting("nyc") {
		t.Error("Alerting does not match the metric")
	}

	// A higher threshold turns both alerts off.
	b := newAccuracy(t, conn, Options{Threshold: 2}, now)
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(b.alert.WithLabelValues("berlin")); got != 0 {
		t.Errorf("threshold 200 %%: berlin alert %v", got)
	}
	_ = h
}

func TestRunRefreshesUntilCancelled(t *testing.T) {
	conn, _ := fixture(t)
	a := newAccuracy(t, conn, Options{Interval: 10 * time.Millisecond}, now)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !a.Alerting("paris") {
		if time.Now().After(deadline) {
			t.Fatal("Run did not refresh the alerts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
