package training_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/training"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openCH(t *testing.T) driver.Conn {
	t.Helper()
	conn, _, _ := chtest.Migrated(t)
	return conn
}

var histStart = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

const histDays = 22

func history() []training.RegionHistory { return historyDays(histDays) }

func historyDays(days int) []training.RegionHistory {
	return training.GenerateHistory(training.HistoryOptions{Days: days, Start: histStart, Seed: 7,
		Regions: training.DefaultRegions[:3]})
}

// The pipeline reads a 22-day simulated history back from ClickHouse, beats
// seasonal naive, passes the gate and registers a candidate with its metrics;
// 22 days are too short for v3, so the default schema is v2.
func TestPipelineFromClickHouseRegistersCandidate(t *testing.T) {
	ctx := ctxT(t)
	conn := openCH(t)
	h := analytics.NewHistory(conn, analytics.HistoryOptions{})
	hist := history()
	for _, rh := range hist {
		// Drop the all-zero minutes as demand_minute would, and one more
		// row, so the loader must fill the gap with zeros.
		if err := h.InsertDemandMinutes(ctx, rh.Region.ID, slices.Delete(slices.Clone(rh.Minutes), 5000, 5001)); err != nil {
			t.Fatal(err)
		}
	}
	end := histStart.AddDate(0, 0, histDays)
	loaded, err := training.LoadHistory(ctx, conn, training.LoadOptions{End: end, Window: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 3 {
		t.Fatalf("loaded %d regions, want 3", len(loaded))
	}
	for i, rh := range loaded {
		if len(rh.Minutes) != histDays*24*60 {
			t.Fatalf("%s: %d minutes, want %d", rh.Region.ID, len(rh.Minutes), histDays*24*60)
		}
		if rh.Minutes[5000].Searches != 0 || !rh.Minutes[5000].Start.Equal(histStart.Add(5000*time.Minute)) {
			t.Fatalf("%s: gap minute = %+v, want zero activity at its time", rh.Region.ID, rh.Minutes[5000])
		}
		var want string
		for _, r := range hist {
			if r.Region.ID == rh.Region.ID {
				want = r.Region.ID
				if rh.Minutes[6000].Searches != r.Minutes[6000].Searches {
					t.Fatalf("%s: minute 6000 searches %v, want %v", want, rh.Minutes[6000].Searches, r.Minutes[6000].Searches)
				}
			}
		}
		if want == "" {
			t.Fatalf("loaded unknown region %d %q", i, rh.Region.ID)
		}
	}

	var steps []training.Progress
	// 22 days leave the daily horizon a handful of rows after the 8 days
	// of memory: it is trained on the real-data benchmark, not here. The
	// schema is set: by default so short a history backtests v1 too.
	res, err := training.RunPipeline(ctx, loaded, training.PipelineOptions{Schema: "v2", Horizons: []int{5, 15, 60},
		Progress: func(p training.Progress) { steps = append(steps, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 4 || steps[3].Step != 4 || steps[3].Steps != 4 {
		t.Fatalf("progress = %+v, want 4 steps", steps)
	}
	for _, hz := range []int{5, 15, 60} {
		m, n, a := res.Holdout.Model[hz], res.Holdout.SeasonalNaive[hz], res.Holdout.HistoricalAverage[hz]
		t.Logf("h%d: model MAPE %.3f WAPE %.3f RMSE %.1f bias %+.3f | naive WAPE %.3f | hist avg WAPE %.3f | q10 %.3f q90 %.3f",
			hz, m.MAPE, m.WAPE, m.RMSE, m.Bias, n.WAPE, a.WAPE, res.Q10[hz], res.Q90[hz])
		if !(m.WAPE < n.WAPE) || !(m.WAPE < a.WAPE) {
			t.Errorf("h%d: model WAPE %.3f does not beat naive %.3f and average %.3f", hz, m.WAPE, n.WAPE, a.WAPE)
		}
		if !(res.Q10[hz] < 1 && 1 < res.Q90[hz]) {
			t.Errorf("h%d: interval [%v, %v] does not contain 1", hz, res.Q10[hz], res.Q90[hz])
		}
		if b := res.Backtest.Model[hz]; b.N == 0 || !(b.WAPE < res.Backtest.SeasonalNaive[hz].WAPE) {
			t.Errorf("h%d: backtest %+v vs naive %+v", hz, b, res.Backtest.SeasonalNaive[hz])
		}
		for _, r := range []string{"berlin", "paris", "london"} {
			if res.Holdout.ModelByRegion[r][hz].N == 0 {
				t.Errorf("h%d: no holdout forecasts for %s", hz, r)
			}
		}
	}
	if !res.Passed || len(res.Reasons) != 0 {
		t.Fatalf("gate: passed %v, reasons %v", res.Passed, res.Reasons)
	}

	store, err := registry.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conn, store)
	e, err := training.RegisterResult(ctx, reg, "demand", res)
	if err != nil {
		t.Fatal(err)
	}
	got, err := reg.Get(ctx, "demand", e.Version)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != registry.StatusCandidate || got.SchemaHash != features.V2.Hash() {
		t.Fatalf("registered %+v, want a candidate with the V2 hash", got)
	}
	for _, k := range []string{"holdout_wape_h15", "naive_wape_h15", "havg_wape_h15", "holdout_mape_h60", "backtest_wape_h5",
		"interval_q10_h15", "interval_q90_h15", "holdout_wape_h15_berlin"} {
		if _, ok := got.Metrics[k]; !ok {
			t.Errorf("metric %s missing from %v", k, got.Metrics)
		}
	}
	if got.Metrics["gate_passed"] != 1 || got.Metrics["holdout_wape_h15"] != res.Holdout.Model[15].WAPE {
		t.Errorf("metrics gate_passed %v, holdout_wape_h15 %v", got.Metrics["gate_passed"], got.Metrics["holdout_wape_h15"])
	}
	if !got.TrainTo.Equal(end.Add(-48 * time.Hour)) {
		t.Errorf("train_to %v, want the holdout start %v", got.TrainTo, end.Add(-48*time.Hour))
	}
	art, err := reg.Load(ctx, got)
	if err != nil || len(art) == 0 {
		t.Fatalf("artifact: %d bytes, %v", len(art), err)
	}
}

// Deliberately bad settings are rejected with their reasons recorded.
func TestPipelineRejectsBadModels(t *testing.T) {
	ctx := ctxT(t)
	conn := openCH(t)
	store, err := registry.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conn, store)
	hist := history()
	for _, tc := range []struct {
		name   string
		opts   training.PipelineOptions
		reason string
	}{
		{"mape threshold 0.1 %", training.PipelineOptions{MAPEThreshold: 0.001}, "above the threshold 0.10 %"},
		{"one tree", training.PipelineOptions{Train: training.Options{NumTrees: 1}}, "does not beat seasonal naive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Folds = -1
			res, err := training.RunPipeline(ctx, hist, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Passed || len(res.Reasons) == 0 {
				t.Fatalf("gate passed %v (reasons %v), want rejected", res.Passed, res.Reasons)
			}
			if !strings.Contains(strings.Join(res.Reasons, "; "), tc.reason) {
				t.Fatalf("reasons %q lack %q", res.Reasons, tc.reason)
			}
			e, err := training.RegisterResult(ctx, reg, "demand", res)
			if err != nil {
				t.Fatal(err)
			}
			got, err := reg.Get(ctx, "demand", e.Version)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != registry.StatusRejected || got.Metrics["gate_passed"] != 0 {
				t.Fatalf("status %s, gate_passed %v; want rejected, 0", got.Status, got.Metrics["gate_passed"])
			}
			var params struct {
				Gate    string   `json:"gate"`
				Reasons []string `json:"gate_reasons"`
			}
			if err := json.Unmarshal(got.Params, &params); err != nil {
				t.Fatal(err)
			}
			if params.Gate != "rejected" || !reflect.DeepEqual(params.Reasons, res.Reasons) {
				t.Fatalf("params gate %q reasons %q, want rejected %q", params.Gate, params.Reasons, res.Reasons)
			}
		})
	}
}

func TestLoadHistoryNoData(t *testing.T) {
	ctx := ctxT(t)
	conn := openCH(t)
	end := time.Date(2026, 3, 30, 0, 0, 0, 0, time.UTC)
	_, err := training.LoadHistory(ctx, conn, training.LoadOptions{End: end})
	if !errors.Is(err, training.ErrNoData) {
		t.Fatalf("err = %v, want ErrNoData", err)
	}
	for _, s := range []string{"any region", "2026-03-02T00:00:00Z", "2026-03-30T00:00:00Z", "surge replay", "surge simulate --history"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	_, err = training.LoadHistory(ctx, conn, training.LoadOptions{End: end, Regions: []string{"berlin", "oslo"}, Window: 7 * 24 * time.Hour})
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "regions berlin, oslo") || !strings.Contains(err.Error(), "2026-03-23") {
		t.Fatalf("err = %v, want ErrNoData naming the regions and window", err)
	}
}

func TestPipelineNeedsEnoughHistory(t *testing.T) {
	ctx := ctxT(t)
	if _, err := training.RunPipeline(ctx, nil, training.PipelineOptions{}); !errors.Is(err, training.ErrNoData) {
		t.Fatalf("no history: err = %v", err)
	}
	short := training.GenerateHistory(training.HistoryOptions{Days: 10, Start: histStart, Regions: training.DefaultRegions[:1]})
	// The default steps down to v1, the shortest memory.
	_, err := training.RunPipeline(ctx, short, training.PipelineOptions{})
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "need at least 12 days") {
		t.Fatalf("10 days with 2 holdout and 2 backtest days: err = %v", err)
	}
	_, err = training.RunPipeline(ctx, short, training.PipelineOptions{Schema: "v2"})
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "need at least 15 days") ||
		!strings.Contains(err.Error(), "8 days of long memory") {
		t.Fatalf("v2, 10 days with 2 holdout and 2 backtest days: err = %v", err)
	}
	_, err = training.RunPipeline(ctx, short, training.PipelineOptions{Schema: "v3"})
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "need at least 28 days") ||
		!strings.Contains(err.Error(), "21 days of long memory") {
		t.Fatalf("v3, 10 days with 2 holdout and 2 backtest days: err = %v", err)
	}
	_, err = training.RunPipeline(ctx, short, training.PipelineOptions{Schema: "v1"})
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "need at least 12 days") {
		t.Fatalf("v1, 10 days with 2 holdout and 2 backtest days: err = %v", err)
	}
}

// No future leakage, by construction: multiplying every minute after the
// holdout start by 1000 changes neither the returned model (trained before
// the holdout) nor the backtest (whose folds all end at the holdout start).
func TestPipelineNoFutureLeakage(t *testing.T) {
	for _, tt := range []struct {
		schema string
		days   int
	}{{"v1", histDays}, {"v2", histDays}, {"v3", 29}} {
		clean, poisoned := historyDays(tt.days), historyDays(tt.days)
		holdStart := histStart.AddDate(0, 0, tt.days-2)
		for _, rh := range poisoned {
			for i := range rh.Minutes {
				if !rh.Minutes[i].Start.Before(holdStart) {
					rh.Minutes[i].Searches *= 1000
					rh.Minutes[i].Supply *= 1000
				}
			}
		}
		t.Run(tt.schema, func(t *testing.T) { testNoFutureLeakage(t, tt.schema, clean, poisoned, holdStart) })
	}
}

func testNoFutureLeakage(t *testing.T, schema string, clean, poisoned []training.RegionHistory, holdStart time.Time) {
	ctx := ctxT(t)
	opts := training.PipelineOptions{Schema: schema, Folds: 2, Horizons: []int{5, 15, 60}, Train: training.Options{NumTrees: 30}}
	a, err := training.RunPipeline(ctx, clean, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := training.RunPipeline(ctx, poisoned, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Folds) != 2 || !a.Folds[1].End.Equal(holdStart) || !a.Folds[0].Origin.Before(a.Folds[1].Origin) {
		t.Fatalf("folds %+v, want two time-ordered folds ending at %v", a.Folds, holdStart)
	}
	if !reflect.DeepEqual(a.Backtest, b.Backtest) {
		t.Fatalf("the backtest saw data after its folds:\n%+v\n%+v", a.Backtest.Model, b.Backtest.Model)
	}
	rows, _ := training.BuildDataset(clean, features.V1, []int{5, 15, 60}, 97)
	if sc := features.Schemas[schema]; sc.LongMemory() {
		enc, err := features.ParseEncoding(a.Model.Meta.Params[features.EncodingParam])
		if err != nil {
			t.Fatal(err)
		}
		rows = nil
		for _, rh := range clean {
			s := make([]float64, len(rh.Minutes))
			for i, m := range rh.Minutes {
				s[i] = m.Searches
			}
			p := features.PrefixSum(s)
			for o := sc.MemoryMinutes(); o < len(rh.Minutes); o += 97 {
				for _, h := range []int{5, 15, 60} {
					rows = append(rows, training.LongMemoryRow(sc, rh.Minutes, p, o, h, rh.Region.ID, enc))
				}
			}
		}
	}
	pa, pb := make([]float32, len(rows)), make([]float32, len(rows))
	a.Model.PredictBatch(rows, pa)
	b.Model.PredictBatch(rows, pb)
	if !slices.Equal(pa, pb) {
		t.Fatal("the returned model depends on data after its training window")
	}
	if math.Abs(b.Holdout.Model[15].WAPE-a.Holdout.Model[15].WAPE) < 0.5 {
		t.Fatalf("holdout WAPE %v vs %v: the poisoned holdout should be far off", a.Holdout.Model[15].WAPE, b.Holdout.Model[15].WAPE)
	}
}

// The defaults step down on a short history: v3 needs two weeks of fitting
// origins after its three weeks of memory, else v2 is trained; the daily
// horizon needs two weeks of fitting origins under the chosen schema.
func TestPipelineDefaultsFollowHistory(t *testing.T) {
	for _, tt := range []struct {
		days, folds      int
		schema, horizons string // schema "": whichever had the lower backtest WAPE
	}{
		{22, -1, "v2", "5,15,60"},      // 22 − 1 holdout − 8 memory − 1 validation: 12 days
		{38, -1, "v3", "5,15,60,1440"}, // 38 − 1 − 21 − 1: 15 days
		{9, -1, "v1", "5,15,60"},       // v2's memory does not fit: v1 rather than no model
		{13, 2, "", "5,15,60"},         // 13 − 1 − 2 folds − 8 memory − 1 validation = 1: v1 and v2 backtested
	} {
		hist := training.GenerateHistory(training.HistoryOptions{Days: tt.days, Start: histStart, Seed: 7, Regions: training.DefaultRegions[:1]})
		res, err := training.RunPipeline(ctxT(t), hist, training.PipelineOptions{HoldoutDays: 1, ValidationDays: 1, Folds: tt.folds, Train: training.Options{NumTrees: 5}})
		if err != nil {
			t.Fatalf("%d days: %v", tt.days, err)
		}
		p := res.Model.Meta.Params
		if tt.schema == "" {
			// "v2 0.1234, v1 0.0987": the schema kept is the lower.
			best, bestW := "", math.Inf(1)
			for _, c := range strings.Split(p["schema_backtest_wape"], ", ") {
				var name string
				var w float64
				if _, err := fmt.Sscanf(c, "%s %g", &name, &w); err != nil {
					t.Fatalf("%d days: schema_backtest_wape %q: %v", tt.days, p["schema_backtest_wape"], err)
				}
				if w < bestW {
					best, bestW = name, w
				}
			}
			if n := strings.Count(p["schema_backtest_wape"], ","); n != 1 {
				t.Errorf("%d days: schema_backtest_wape %q, want v2 and v1", tt.days, p["schema_backtest_wape"])
			}
			tt.schema = best
		}
		if p["schema"] != tt.schema || p["horizons"] != tt.horizons {
			t.Errorf("%d days: schema %s horizons %s, want %s %s", tt.days, p["schema"], p["horizons"], tt.schema, tt.horizons)
		}
		if tt.folds > 0 && len(res.Backtest.Model) == 0 {
			t.Errorf("%d days: no backtest metrics", tt.days)
		}
	}
}
