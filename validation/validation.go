// Package validation evaluates demand forecasts: accuracy metrics (MAPE,
// WAPE, RMSE, bias), the two baselines every model is compared with
// (seasonal naive: the same minutes one week earlier; historical average:
// the region's mean per hour of week over the training data only),
// time-ordered evaluation folds (a holdout and a rolling-origin backtest),
// empirical prediction-interval quantiles, and the gate that decides whether
// a trained model may be registered as a candidate.
//
// It is pure: no I/O, no model code. The training pipeline
// (training.RunPipeline) builds the samples and calls it.
package validation

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// DefaultMAPEMinActual is the smallest actual value that counts towards
// MAPE: periods with less demand are left out (a percentage of almost
// nothing says nothing).
const DefaultMAPEMinActual = 5

// Metrics is the accuracy of forecasts against actual values.
type Metrics struct {
	N     int     // forecasts evaluated
	NMAPE int     // forecasts whose actual value counted towards MAPE
	MAPE  float64 // mean |pred−actual|/actual over actual ≥ the MAPE minimum; NaN when none
	WAPE  float64 // Σ|pred−actual| / Σ|actual|; NaN when Σ|actual| = 0
	RMSE  float64 // sqrt(mean (pred−actual)²); NaN when N = 0
	Bias  float64 // Σ(pred−actual) / Σ|actual|, signed (> 0: over-forecast); NaN when Σ|actual| = 0
}

// Accumulator collects forecast/actual pairs. The zero value uses
// DefaultMAPEMinActual; set MAPEMinActual to change it.
type Accumulator struct {
	MAPEMinActual float64
	n, nm         int
	sq, abs, sum  float64
	ape, actual   float64
}

// Add records one forecast and its actual value.
func (a *Accumulator) Add(pred, actual float64) {
	minActual := a.MAPEMinActual
	if minActual <= 0 {
		minActual = DefaultMAPEMinActual
	}
	d := pred - actual
	a.n++
	a.sq += d * d
	a.abs += math.Abs(d)
	a.sum += d
	a.actual += math.Abs(actual)
	if actual >= minActual {
		a.nm++
		a.ape += math.Abs(d) / actual
	}
}

// Metrics returns the metrics of the pairs added so far.
func (a *Accumulator) Metrics() Metrics {
	m := Metrics{N: a.n, NMAPE: a.nm, MAPE: math.NaN(), WAPE: math.NaN(), RMSE: math.NaN(), Bias: math.NaN()}
	if a.n > 0 {
		m.RMSE = math.Sqrt(a.sq / float64(a.n))
	}
	if a.nm > 0 {
		m.MAPE = a.ape / float64(a.nm)
	}
	if a.actual > 0 {
		m.WAPE = a.abs / a.actual
		m.Bias = a.sum / a.actual
	}
	return m
}

// Compute returns the metrics of pred against actual (same length), with
// MAPE over actual ≥ mapeMinActual (DefaultMAPEMinActual when 0).
func Compute(pred, actual []float64, mapeMinActual float64) Metrics {
	if len(pred) != len(actual) {
		panic(fmt.Sprintf("validation: %d forecasts for %d actual values", len(pred), len(actual)))
	}
	a := Accumulator{MAPEMinActual: mapeMinActual}
	for i := range pred {
		a.Add(pred[i], actual[i])
	}
	return a.Metrics()
}

// Week is the seasonal-naive lag.
const Week = 7 * 24 * time.Hour

// SeasonalNaive forecasts the sum of series[t+1 .. t+h] (per-minute values,
// consecutive) by the same minutes one week earlier. ok is false when the
// series does not reach back a week.
func SeasonalNaive(series []float64, t, h int) (v float64, ok bool) {
	const lag = 7 * 24 * 60
	if t+1-lag < 0 || t+h >= len(series)+lag || h <= 0 {
		return 0, false
	}
	for i := t + 1 - lag; i <= t+h-lag; i++ {
		v += series[i]
	}
	return v, true
}

// HourOfWeek is the UTC hour of the week, 0 (Sunday 00h) to 167 (the
// convention of training.HourOfWeek).
func HourOfWeek(t time.Time) int {
	t = t.UTC()
	return int(t.Weekday())*24 + t.Hour()
}

// HistoricalAverage is a region's mean value per minute for each hour of
// the week, learned from training data only.
type HistoricalAverage struct {
	PerMinute [168]float64
	Overall   float64 // used for hours of the week the training data lacks
	seen      [168]bool
}

// NewHistoricalAverage learns the profile of per-minute values whose
// minute i starts at start + i minutes.
func NewHistoricalAverage(start time.Time, values []float64) *HistoricalAverage {
	var sum [168]float64
	var cnt [168]int
	total := 0.0
	for i, v := range values {
		h := HourOfWeek(start.Add(time.Duration(i) * time.Minute))
		sum[h] += v
		cnt[h]++
		total += v
	}
	ha := &HistoricalAverage{Overall: total / float64(max(1, len(values)))}
	for h := range sum {
		if cnt[h] > 0 {
			ha.PerMinute[h] = sum[h] / float64(cnt[h])
			ha.seen[h] = true
		}
	}
	return ha
}

// Forecast is the expected total over the h minutes starting at from.
func (ha *HistoricalAverage) Forecast(from time.Time, h int) float64 {
	v := 0.0
	for i := range h {
		k := HourOfWeek(from.Add(time.Duration(i) * time.Minute))
		if ha.seen[k] {
			v += ha.PerMinute[k]
		} else {
			v += ha.Overall
		}
	}
	return v
}

// Fold is one evaluation split: the model trains on data before Origin
// and is tested on forecasts made from origins in [Origin, End).
type Fold struct {
	Origin, End time.Time
}

// RollingOrigin returns k folds of length test each, ending at end and
// ordered by time: fold i tests [end − (k−i)·test, end − (k−i−1)·test). Each
// fold trains only on data before its Origin, so no fold sees its future.
func RollingOrigin(end time.Time, k int, test time.Duration) []Fold {
	out := make([]Fold, 0, max(0, k))
	for i := range k {
		o := end.Add(-time.Duration(k-i) * test)
		out = append(out, Fold{Origin: o, End: o.Add(test)})
	}
	return out
}

// Quantile is the q-quantile (0 ≤ q ≤ 1) of values by linear
// interpolation between order statistics; NaN for no values. values is not
// modified.
func Quantile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

// GateOptions are the acceptance criteria. A zero field takes the default.
type GateOptions struct {
	// MAPEThreshold is the largest acceptable MAPE of a horizon, a
	// fraction; default 0.15 (15 %). The MAPE is the one the metrics
	// carry: over the periods whose actual demand is at least the
	// accumulator's MAPEMinActual (DefaultMAPEMinActual), so sparse
	// periods, where a count of 1 against a forecast of 2 is 100 %, do not
	// decide alone.
	MAPEThreshold float64
	// MAPEThresholds overrides MAPEThreshold for single horizons (minutes
	// → fraction), e.g. a looser bound at 5 minutes than at 60.
	MAPEThresholds map[int]float64
}

// Threshold is the MAPE bound of horizon h.
func (o GateOptions) Threshold(h int) float64 {
	if t, ok := o.MAPEThresholds[h]; ok && t > 0 {
		return t
	}
	if o.MAPEThreshold > 0 {
		return o.MAPEThreshold
	}
	return 0.15
}

// Baselines are the forecasters a model must beat, keyed by horizon.
type Baselines struct {
	SeasonalNaive, HistoricalAverage map[int]Metrics
}

// Gate decides whether a model may be registered as a candidate: for every
// horizon, the model's WAPE must be lower than the WAPE of seasonal naive
// and of the historical average, and its MAPE at most the horizon's
// threshold. It returns the reasons for a rejection (empty when it passes),
// in horizon order, each naming the horizon, the rule and both figures.
// model and the baselines are keyed by horizon in minutes.
func Gate(model map[int]Metrics, base Baselines, opts GateOptions) (pass bool, reasons []string) {
	hs := make([]int, 0, len(model))
	for h := range model {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	if len(hs) == 0 {
		return false, []string{"no holdout forecasts to evaluate"}
	}
	for _, h := range hs {
		m := model[h]
		for _, b := range []struct {
			name string
			m    map[int]Metrics
		}{{"seasonal naive", base.SeasonalNaive}, {"the historical average", base.HistoricalAverage}} {
			bm, ok := b.m[h]
			switch {
			case !ok || math.IsNaN(m.WAPE) || math.IsNaN(bm.WAPE):
				reasons = append(reasons, fmt.Sprintf("h%d: WAPE against %s undefined (no demand in the holdout or no baseline data)", h, b.name))
			case !(m.WAPE < bm.WAPE):
				reasons = append(reasons, fmt.Sprintf("h%d: WAPE %.4f does not beat %s %.4f", h, m.WAPE, b.name, bm.WAPE))
			}
		}
		thr := opts.Threshold(h)
		switch {
		case math.IsNaN(m.MAPE):
			reasons = append(reasons, fmt.Sprintf("h%d: MAPE undefined (no period with enough demand to count)", h))
		case m.MAPE > thr:
			reasons = append(reasons, fmt.Sprintf("h%d: MAPE %.2f %% (periods with enough demand) above the threshold %.2f %%", h, 100*m.MAPE, 100*thr))
		}
	}
	return len(reasons) == 0, reasons
}
