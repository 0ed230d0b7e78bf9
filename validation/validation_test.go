package validation

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name         string
		pred, actual []float64
		minActual    float64
		want         Metrics
	}{
		{
			// errors +2, −2, +1, −4; Σ|actual| = 40
			name: "hand computed", pred: []float64{12, 8, 11, 6}, actual: []float64{10, 10, 10, 10},
			want: Metrics{N: 4, NMAPE: 4, MAPE: 0.9 / 4, WAPE: 9.0 / 40, RMSE: math.Sqrt(25.0 / 4), Bias: -3.0 / 40},
		},
		{
			// actual 2 < 5 leaves MAPE but counts everywhere else:
			// errors 1, 5; MAPE = 5/20; WAPE = 6/22; bias = (−1+5)/22.
			name: "small actual left out of MAPE", pred: []float64{1, 25}, actual: []float64{2, 20},
			want: Metrics{N: 2, NMAPE: 1, MAPE: 0.25, WAPE: 6.0 / 22, RMSE: math.Sqrt(26.0 / 2), Bias: 4.0 / 22},
		},
		{
			name: "custom MAPE minimum", pred: []float64{1, 25}, actual: []float64{2, 20}, minActual: 1,
			want: Metrics{N: 2, NMAPE: 2, MAPE: (0.5 + 0.25) / 2, WAPE: 6.0 / 22, RMSE: math.Sqrt(13), Bias: 4.0 / 22},
		},
		{
			name: "no demand", pred: []float64{1, 2}, actual: []float64{0, 0},
			want: Metrics{N: 2, MAPE: math.NaN(), WAPE: math.NaN(), RMSE: math.Sqrt(2.5), Bias: math.NaN()},
		},
		{
			name: "empty", want: Metrics{MAPE: math.NaN(), WAPE: math.NaN(), RMSE: math.NaN(), Bias: math.NaN()},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compute(tc.pred, tc.actual, tc.minActual)
			same := func(a, b float64) bool { return (math.IsNaN(a) && math.IsNaN(b)) || near(a, b) }
			if got.N != tc.want.N || got.NMAPE != tc.want.NMAPE || !same(got.MAPE, tc.want.MAPE) ||
				!same(got.WAPE, tc.want.WAPE) || !same(got.RMSE, tc.want.RMSE) || !same(got.Bias, tc.want.Bias) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSeasonalNaive(t *testing.T) {
	const week = 7 * 24 * 60
	series := make([]float64, week+10)
	for i := range series {
		series[i] = float64(i % 100)
	}
	for _, tc := range []struct {
		t, h int
		want float64
		ok   bool
	}{
		{t: week, h: 3, want: 1 + 2 + 3, ok: true}, // minutes 1..3 of the week before
		{t: week + 5, h: 1, want: 6, ok: true},
		{t: week - 2, h: 5, ok: false}, // would need minute −1
		{t: week - 1, h: 2, want: 0 + 1, ok: true},
		{t: week, h: 0, ok: false},
	} {
		got, ok := SeasonalNaive(series, tc.t, tc.h)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("SeasonalNaive(t=%d, h=%d) = %v, %v; want %v, %v", tc.t, tc.h, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHistoricalAverage(t *testing.T) {
	// Sunday 00:00: two hours of data, 60 minutes of 1 then 60 of 3.
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	values := make([]float64, 120)
	for i := range values {
		values[i] = 1
		if i >= 60 {
			values[i] = 3
		}
	}
	ha := NewHistoricalAverage(start, values)
	if ha.PerMinute[0] != 1 || ha.PerMinute[1] != 3 || ha.Overall != 2 {
		t.Fatalf("profile %v %v overall %v", ha.PerMinute[0], ha.PerMinute[1], ha.Overall)
	}
	for _, tc := range []struct {
		from time.Time
		h    int
		want float64
	}{
		{start.Add(50 * time.Minute), 15, 10*1 + 5*3},       // spans hours 0 and 1
		{start.Add(7*24*time.Hour + 70*time.Minute), 5, 15}, // a week later, hour 1
		{start.Add(119 * time.Minute), 3, 3 + 2 + 2},        // hour 2 never seen: overall mean
	} {
		if got := ha.Forecast(tc.from, tc.h); got != tc.want {
			t.Errorf("Forecast(%v, %d) = %v, want %v", tc.from, tc.h, got, tc.want)
		}
	}
}

func TestRollingOriginIsTimeOrdered(t *testing.T) {
	end := time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	folds := RollingOrigin(end, 3, day)
	want := []Fold{{end.Add(-3 * day), end.Add(-2 * day)}, {end.Add(-2 * day), end.Add(-day)}, {end.Add(-day), end}}
	if !slices.Equal(folds, want) {
		t.Fatalf("folds %v, want %v", folds, want)
	}
	if len(RollingOrigin(end, 0, day)) != 0 {
		t.Fatal("0 folds should give none")
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 3, 2, 4}
	for _, tc := range []struct{ q, want float64 }{{0, 1}, {1, 5}, {0.5, 3}, {0.1, 1.4}, {0.9, 4.6}} {
		if got := Quantile(v, tc.q); !near(got, tc.want) {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if !slices.Equal(v, []float64{5, 1, 3, 2, 4}) {
		t.Fatal("Quantile modified its input")
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Fatal("Quantile of nothing should be NaN")
	}
}

func TestGate(t *testing.T) {
	good := Metrics{MAPE: 0.10, WAPE: 0.08}
	naive := Metrics{MAPE: 0.2, WAPE: 0.2}
	havg := Metrics{MAPE: 0.18, WAPE: 0.15}
	both := func(hs ...int) Baselines {
		b := Baselines{SeasonalNaive: map[int]Metrics{}, HistoricalAverage: map[int]Metrics{}}
		for _, h := range hs {
			b.SeasonalNaive[h], b.HistoricalAverage[h] = naive, havg
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		model   map[int]Metrics
		base    Baselines
		opts    GateOptions
		pass    bool
		reasons []string
	}{
		{"passes", map[int]Metrics{5: good, 15: good}, both(5, 15), GateOptions{}, true, nil},
		{"worse than naive", map[int]Metrics{5: good, 15: {MAPE: 0.1, WAPE: 0.25}}, both(5, 15), GateOptions{}, false,
			[]string{"h15: WAPE 0.2500 does not beat seasonal naive 0.2000", "h15: WAPE 0.2500 does not beat the historical average 0.1500"}},
		{"beats naive, not the historical average", map[int]Metrics{60: {MAPE: 0.1, WAPE: 0.17}}, both(60), GateOptions{}, false,
			[]string{"h60: WAPE 0.1700 does not beat the historical average 0.1500"}},
		{"tie with the historical average", map[int]Metrics{5: {MAPE: 0.1, WAPE: 0.15}}, both(5), GateOptions{}, false,
			[]string{"h5: WAPE 0.1500 does not beat the historical average 0.1500"}},
		{"baseline missing", map[int]Metrics{5: good}, Baselines{SeasonalNaive: map[int]Metrics{5: naive}}, GateOptions{}, false,
			[]string{"h5: WAPE against the historical average undefined (no demand in the holdout or no baseline data)"}},
		{"MAPE over the default 15 %", map[int]Metrics{60: {MAPE: 0.16, WAPE: 0.1}}, both(60), GateOptions{}, false,
			[]string{"h60: MAPE 16.00 % (periods with enough demand) above the threshold 15.00 %"}},
		{"custom threshold", map[int]Metrics{5: good}, both(5), GateOptions{MAPEThreshold: 0.05}, false,
			[]string{"h5: MAPE 10.00 % (periods with enough demand) above the threshold 5.00 %"}},
		{"per-horizon threshold loosens one horizon", map[int]Metrics{5: {MAPE: 0.4, WAPE: 0.1}, 60: good},
			both(5, 60), GateOptions{MAPEThresholds: map[int]float64{5: 0.5}}, true, nil},
		{"per-horizon threshold tightens one horizon", map[int]Metrics{5: good, 60: good},
			both(5, 60), GateOptions{MAPEThreshold: 0.5, MAPEThresholds: map[int]float64{60: 0.05}}, false,
			[]string{"h60: MAPE 10.00 % (periods with enough demand) above the threshold 5.00 %"}},
		{"undefined", map[int]Metrics{5: {MAPE: math.NaN(), WAPE: math.NaN()}}, both(5), GateOptions{}, false,
			[]string{"h5: WAPE against seasonal naive undefined (no demand in the holdout or no baseline data)",
				"h5: WAPE against the historical average undefined (no demand in the holdout or no baseline data)",
				"h5: MAPE undefined (no period with enough demand to count)"}},
		{"nothing evaluated", nil, Baselines{}, GateOptions{}, false, []string{"no holdout forecasts to evaluate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pass, reasons := Gate(tc.model, tc.base, tc.opts)
			if pass != tc.pass || strings.Join(reasons, "|") != strings.Join(tc.reasons, "|") {
				t.Fatalf("Gate = %v %q, want %v %q", pass, reasons, tc.pass, tc.reasons)
			}
		})
	}
}

func TestGateThreshold(t *testing.T) {
	for _, tc := range []struct {
		opts GateOptions
		h    int
		want float64
	}{
		{GateOptions{}, 5, 0.15},
		{GateOptions{MAPEThreshold: 0.3}, 5, 0.3},
		{GateOptions{MAPEThreshold: 0.3, MAPEThresholds: map[int]float64{5: 0.6}}, 5, 0.6},
		{GateOptions{MAPEThreshold: 0.3, MAPEThresholds: map[int]float64{5: 0.6}}, 15, 0.3},
		{GateOptions{MAPEThresholds: map[int]float64{5: 0}}, 5, 0.15},
	} {
		if got := tc.opts.Threshold(tc.h); got != tc.want {
			t.Errorf("%+v.Threshold(%d) = %v, want %v", tc.opts, tc.h, got, tc.want)
		}
	}
}
