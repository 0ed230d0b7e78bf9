package training

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/validation"
)

// DefaultPipelineTrees is the default cap on boosting rounds per horizon of
// `surge train` and the scheduled retrain; early stopping on the
// validation days picks fewer.
const DefaultPipelineTrees = 500

// DefaultMAPEThresholds are the gate's MAPE bounds per horizon when none
// are configured: the seed design's 15 % at a day, looser where counts are
// small: a count of 5 varies by about 45 % by itself (Poisson), so no
// forecaster reaches 15 % over 5-minute periods with y ≥ 5.
var DefaultMAPEThresholds = map[int]float64{5: 0.60, 15: 0.35, 60: 0.20}

// ErrNoData is wrapped by the errors about missing or too short history.
var ErrNoData = errors.New("not enough demand history")

// PipelineOptions configures RunPipeline. A zero field takes the documented
// default.
type PipelineOptions struct {
	Version     string // model version written into the metadata; default "candidate"
	HoldoutDays int    // the last days, the holdout the gate judges; default 2
	// Folds is the number of rolling-origin backtest folds before the
	// holdout, each FoldDays long and trained on the data before its
	// origin; default 2; negative: no backtest.
	Folds    int
	FoldDays int // default 1
	// Schema is the feature schema: "v3" or "v2", long-memory features with
	// one ensemble per horizon, or "v1". The default ("") is v3, or v2 when
	// the history leaves v3 less than minFitDays (14) of fitting origins
	// after its three weeks of memory; with less than that for v2 too, v1
	// and (where its memory fits) v2 are backtested on the folds and the
	// one with the lower mean WAPE over the horizons is trained (without
	// folds: v2 where it fits, else v1).
	Schema string
	// Horizons are the forecast horizons in minutes; default
	// features.Horizons (5, 15, 60, 1440) for v2 and v3, without 1440 when
	// the schema has less than minFitDays of fitting origins; 5, 15, 60 for
	// v1.
	Horizons []int
	Stride   int // v1: minutes between samples; default 5 (v2 strides depend on the horizon)
	Train    Options
	// ValidationDays (v2): the last days before each training cut are
	// held out of fitting for early stopping and the choice of objective;
	// default HoldoutDays.
	ValidationDays int
	// Objectives (v2) are tried per horizon, the one with the lowest
	// validation WAPE kept; they must share a link (the served graph has
	// one). Default poisson and tweedie.
	Objectives []string
	// Holidays is the calendar behind the v2 holiday feature; stored with
	// the model.
	Holidays features.Calendar
	// MAPEThreshold is the gate's largest acceptable holdout MAPE per
	// horizon (a fraction); default 0.15, and then DefaultMAPEThresholds
	// for the horizons MAPEThresholds does not name.
	MAPEThreshold float64
	// MAPEThresholds overrides MAPEThreshold per horizon (minutes →
	// fraction); see validation.GateOptions.
	MAPEThresholds map[int]float64
	// MAPEMinActual: only targets ≥ it count towards MAPE (and the gate's
	// MAPE bound); default 5.
	MAPEMinActual float64
	// Progress, when set, is called at the start of each step.
	Progress func(Progress)
	Logger   *slog.Logger // default slog.Default()
}

// Progress reports how far RunPipeline is: step Step of Steps (1-based).
type Progress struct {
	Step, Steps int
	What        string
}

func (o PipelineOptions) withDefaults() PipelineOptions {
	if o.Version == "" {
		o.Version = "candidate"
	}
	if o.HoldoutDays <= 0 {
		o.HoldoutDays = 2
	}
	if o.Folds == 0 {
		o.Folds = 2
	}
	o.Folds = max(0, o.Folds)
	if o.FoldDays <= 0 {
		o.FoldDays = 1
	}
	if o.ValidationDays <= 0 {
		o.ValidationDays = o.HoldoutDays
	}
	if len(o.Objectives) == 0 {
		o.Objectives = []string{ObjectivePoisson, ObjectiveTweedie}
	}
	if o.Stride <= 0 {
		o.Stride = 5
	}
	if o.MAPEThreshold <= 0 {
		// Without a bound for every horizon, the per-horizon defaults
		// apply where MAPEThresholds says nothing.
		o.MAPEThreshold = 0.15
		m := maps.Clone(DefaultMAPEThresholds)
		maps.Copy(m, o.MAPEThresholds)
		o.MAPEThresholds = m
	}
	if o.MAPEMinActual <= 0 {
		o.MAPEMinActual = validation.DefaultMAPEMinActual
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Train.Logger == nil {
		o.Train.Logger = o.Logger
	}
	return o
}

// Evaluation is the accuracy of the model and the two baselines on one set
// of forecasts, per horizon and per region and horizon.
type Evaluation struct {
	Model, SeasonalNaive, HistoricalAverage map[int]validation.Metrics
	// ByRegion[region][horizon], same three forecasters.
	ModelByRegion, NaiveByRegion, AverageByRegion map[string]map[int]validation.Metrics
}

// PipelineResult is what RunPipeline returns.
type PipelineResult struct {
	// Model is trained on every day before the holdout; its metadata holds
	// the name "demand", the version, the schema, params and Metrics().
	Model    *model.Ensemble
	Holdout  Evaluation
	Backtest Evaluation // pooled over the folds; empty maps without folds
	Folds    []validation.Fold
	// Interval quantiles of actual/predicted on the holdout, per horizon:
	// a forecast f has the 80 % interval [f·Q10[h], f·Q90[h]].
	Q10, Q90            map[int]float64
	Passed              bool     // the gate's decision
	Reasons             []string // why the gate rejected the model
	TrainFrom, TrainTo  time.Time
	TrainRows, TestRows int
	Regions             []string
	Duration            time.Duration
}

// sample is one forecast: region r, origin minute index t, horizon h.
type sample struct {
	region  int
	origin  time.Time // end of minute t: the time the forecast is made
	horizon int
	actual  float64
	naive   float64
}

// RunPipeline trains and validates a demand model on per-minute histories
// (consecutive minutes per region, missing minutes already filled with
// zeros; LoadHistory does that from ClickHouse):
//
//   - rows are features.V1 vectors built by features.FromMinutes and
//     Schema.Vector exactly as serving does, one per horizon, the target
//     the searches over the next H minutes; the seasonality index and the
//     historical-average baseline come from the training part only;
//   - backtest: Folds rolling-origin folds of FoldDays before the holdout,
//     each trained on the data before its origin and tested on its window;
//   - holdout: the model trained on everything before the last HoldoutDays
//     is tested on them — it is the model returned (and registered), so
//     its metrics are honest;
//   - every test forecast is compared with seasonal naive (same minutes a
//     week earlier; forecasts without a week of history before them are
//     skipped for all three forecasters) and the historical average;
//   - the gate (validation.Gate) passes when, on the holdout, the model beats
//     seasonal naive and the historical average on WAPE and meets the
//     horizon's MAPE threshold (over targets ≥ MAPEMinActual) for every
//     horizon.
//
// A history shorter than the schema's memory (8 days for v2, 21 for v3),
// the validation days and a day, plus the holdout and folds, fails with
// ErrNoData (for the default schema, shorter than v1's week and a day).
func RunPipeline(ctx context.Context, hist []RegionHistory, opts PipelineOptions) (*PipelineResult, error) {
	start := time.Now()
	opts = opts.withDefaults()
	if len(hist) == 0 {
		return nil, fmt.Errorf("training pipeline: %w: no region has history", ErrNoData)
	}
	var first, end time.Time
	for _, h := range hist {
		if len(h.Minutes) == 0 {
			continue
		}
		f, e := h.Minutes[0].Start, h.Minutes[len(h.Minutes)-1].Start.Add(time.Minute)
		if first.IsZero() || f.Before(first) {
			first = f
		}
		if e.After(end) {
			end = e
		}
	}
	if first.IsZero() {
		return nil, fmt.Errorf("training pipeline: %w: every region's history is empty", ErrNoData)
	}
	day := 24 * time.Hour
	holdStart := end.Add(-time.Duration(opts.HoldoutDays) * day)
	folds := validation.RollingOrigin(holdStart, opts.Folds, time.Duration(opts.FoldDays)*day)
	earliest := holdStart
	if len(folds) > 0 {
		earliest = folds[0].Origin
	}
	// Seasonal naive needs a week before the first test origin, and the
	// model at least a day of its own; long-memory rows need their whole
	// memory window behind them, and the validation days.
	needs := func(schema features.Schema) (time.Duration, string) {
		memory := schema.MemoryMinutes()
		if memory == 0 {
			return validation.Week + day, ""
		}
		return time.Duration(memory)*time.Minute + time.Duration(opts.ValidationDays)*day + day,
			fmt.Sprintf(" (%d days of long memory before the first row, %d validation days and one of training)", memory/1440, opts.ValidationDays)
	}
	// fitDays is how many days of fitting origins a long-memory schema
	// leaves before the validation days of the earliest split.
	fitDays := func(schema features.Schema) float64 {
		return (earliest.Sub(first) - time.Duration(schema.MemoryMinutes())*time.Minute -
			time.Duration(opts.ValidationDays)*day).Hours() / 24
	}
	// The default schema follows the history: the long-memory schemas
	// with two weeks of fitting origins; with less, v1 and (where its
	// memory fits) v2 are both backtested and the one with the lower mean
	// WAPE over the horizons is kept.
	candidates := []string{opts.Schema}
	if opts.Schema == "" {
		switch {
		case fitDays(features.V3) >= minFitDays:
			candidates = []string{"v3"}
		case fitDays(features.V2) >= minFitDays:
			candidates = []string{"v2"}
		default:
			candidates = []string{"v1"}
			if need, _ := needs(features.V2); earliest.Sub(first) >= need {
				candidates = []string{"v2"}
				if len(folds) > 0 {
					candidates = []string{"v2", "v1"}
				}
			}
		}
	}
	withSchema := func(name string) PipelineOptions {
		o := opts
		o.Schema = name
		if len(o.Horizons) == 0 {
			switch {
			case name == "v1":
				o.Horizons = slices.Clone(v1Horizons)
			case fitDays(features.Schemas[name]) < minFitDays:
				o.Horizons = slices.DeleteFunc(slices.Clone(features.Horizons), func(h int) bool { return h >= 1440 })
			default:
				o.Horizons = features.Horizons
			}
		}
		return o
	}
	opts = withSchema(candidates[0])
	schema, split, err := opts.schema()
	if err != nil {
		return nil, fmt.Errorf("training pipeline: %w", err)
	}
	need, what := needs(schema)
	if earliest.Sub(first) < need {
		return nil, fmt.Errorf("training pipeline: %w: history %s .. %s (%.1f days) is too short for %d holdout and %d×%d backtest days: need at least %.0f days%s",
			ErrNoData, first.Format(time.DateTime), end.Format(time.DateTime), end.Sub(first).Hours()/24,
			opts.HoldoutDays, opts.Folds, opts.FoldDays, (need+end.Sub(earliest)).Hours()/24, what)
	}
	res := &PipelineResult{Folds: folds, TrainFrom: first, TrainTo: holdStart}
	for _, h := range hist {
		res.Regions = append(res.Regions, h.Region.ID)
	}
	steps := len(candidates)*len(folds) + 2
	step := 0
	progress := func(what string) {
		step++
		opts.Logger.Info("training pipeline", "step", step, "steps", steps, "what", what)
		if opts.Progress != nil {
			opts.Progress(Progress{Step: step, Steps: steps, What: what})
		}
	}

	var bt *evalAcc
	choice := math.Inf(1)
	var choices []string
	for _, c := range candidates {
		o := withSchema(c)
		sc, sp, err := o.schema()
		if err != nil {
			return nil, fmt.Errorf("training pipeline: %w", err)
		}
		acc := newEvalAcc(o.MAPEMinActual)
		for i, f := range folds {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			progress(fmt.Sprintf("backtest fold %d/%d (%s): train before %s, test to %s", i+1, len(folds), c,
				f.Origin.Format(time.DateTime), f.End.Format(time.DateTime)))
			if _, _, _, err := sp(ctx, hist, f.Origin, f.End, o, acc); err != nil {
				return nil, fmt.Errorf("training pipeline: backtest fold %d (%s): %w", i+1, c, err)
			}
		}
		if len(candidates) == 1 {
			bt = acc
			break
		}
		ev := acc.evaluation()
		w := 0.0
		for _, m := range ev.Model {
			w += m.WAPE / float64(len(ev.Model))
		}
		choices = append(choices, fmt.Sprintf("%s %.4f", c, w))
		if w < choice { // a NaN never wins
			choice, bt, opts, schema, split = w, acc, o, sc, sp
		}
	}
	if bt == nil {
		return nil, fmt.Errorf("training pipeline: %w: no schema of %v has a defined backtest WAPE", ErrNoData, candidates)
	}
	if len(candidates) > 1 {
		opts.Logger.Info("training pipeline: schema chosen on the backtest", "schema", opts.Schema, "mean_wape", strings.Join(choices, ", "))
	}
	progress(fmt.Sprintf("holdout (%s): train before %s, test to %s", opts.Schema, holdStart.Format(time.DateTime), end.Format(time.DateTime)))
	ho := newEvalAcc(opts.MAPEMinActual)
	ens, ratios, rows, err := split(ctx, hist, holdStart, end, opts, ho)
	if err != nil {
		return nil, fmt.Errorf("training pipeline: holdout: %w", err)
	}
	progress("gate and intervals")
	res.Model = ens
	res.TrainRows, res.TestRows = rows[0], rows[1]
	res.Holdout, res.Backtest = ho.evaluation(), bt.evaluation()
	res.Q10, res.Q90 = map[int]float64{}, map[int]float64{}
	for h, r := range ratios {
		res.Q10[h], res.Q90[h] = validation.Quantile(r, 0.1), validation.Quantile(r, 0.9)
	}
	res.Passed, res.Reasons = validation.Gate(res.Holdout.Model,
		validation.Baselines{SeasonalNaive: res.Holdout.SeasonalNaive, HistoricalAverage: res.Holdout.HistoricalAverage},
		validation.GateOptions{MAPEThreshold: opts.MAPEThreshold, MAPEThresholds: opts.MAPEThresholds})
	res.Duration = time.Since(start)

	params := opts.Train.Params()
	params["data_from"] = first.Format(time.RFC3339)
	params["data_to"] = end.Format(time.RFC3339)
	params["holdout_days"] = strconv.Itoa(opts.HoldoutDays)
	params["backtest_folds"] = strconv.Itoa(opts.Folds)
	params["fold_days"] = strconv.Itoa(opts.FoldDays)
	params["schema"] = opts.Schema
	if len(choices) > 0 {
		params["schema_backtest_wape"] = strings.Join(choices, ", ")
	}
	hz := make([]string, len(opts.Horizons))
	for i, h := range opts.Horizons {
		hz[i] = strconv.Itoa(h)
	}
	params["horizons"] = strings.Join(hz, ",")
	if opts.Schema == "v1" {
		params["stride"] = strconv.Itoa(opts.Stride)
	} else {
		params["validation_days"] = strconv.Itoa(opts.ValidationDays)
		params["objectives"] = strings.Join(opts.Objectives, ",")
		delete(params, "objective")
		for k, v := range ens.Meta.Params { // the encoding and the chosen objectives
			params[k] = v
		}
	}
	params["mape_threshold"] = strconv.FormatFloat(opts.MAPEThreshold, 'g', -1, 64)
	params["mape_min_actual"] = strconv.FormatFloat(opts.MAPEMinActual, 'g', -1, 64)
	for h, t := range opts.MAPEThresholds {
		params["mape_threshold_h"+strconv.Itoa(h)] = strconv.FormatFloat(t, 'g', -1, 64)
	}
	ens.Meta = model.Metadata{
		Name:         "demand",
		Version:      opts.Version,
		SchemaHash:   schema.Hash(),
		FeatureNames: schema.Names(),
		TrainedAt:    time.Now().UTC(),
		Params:       params,
		Importance:   ens.Meta.Importance,
		Metrics:      res.Metrics(),
	}
	opts.Logger.Info("training pipeline done", "train_rows", res.TrainRows, "holdout_rows", res.TestRows,
		"passed", res.Passed, "reasons", res.Reasons, "duration", res.Duration)
	return res, nil
}

// v1Horizons are the horizons V1 models are trained for by default.
var v1Horizons = []int{5, 15, 60}

// minFitDays is the fitting history (after the memory, before the
// validation days) below which the defaults step down: v2 instead of v3, and
// no daily horizon (on 15 days of the demo regions a 1440-minute model fitted
// to one day of origins lost to seasonal naive by half).
const minFitDays = 14

type splitFunc func(ctx context.Context, hist []RegionHistory, origin, end time.Time, opts PipelineOptions,
	acc *evalAcc) (*model.Ensemble, map[int][]float64, [2]int, error)

// schema checks the schema option and the objectives.
func (o PipelineOptions) schema() (features.Schema, splitFunc, error) {
	switch o.Schema {
	case "v1":
		return features.V1, runSplit, nil
	case "v2", "v3":
	default:
		return nil, nil, fmt.Errorf("%w: schema %q (want v1, v2 or v3)", ErrBadInput, o.Schema)
	}
	link := ""
	for _, name := range o.Objectives {
		t := o.Train
		t.Objective = name
		obj, err := newObjective(t.withDefaults())
		if err != nil {
			return nil, nil, err
		}
		if link != "" && obj.link() != link {
			return nil, nil, fmt.Errorf("%w: objectives %v mix links (the served model has one)", ErrBadInput, o.Objectives)
		}
		link = obj.link()
	}
	return features.Schemas[o.Schema], runSplitLongMemory, nil
}

// Metrics flattens the result for the registry: holdout_{mape,wape,rmse,bias}_h{H}
// for the model, naive_… (seasonal naive) and havg_… (historical average)
// beside them, backtest_… for the model and naive over the folds,
// holdout_wape_h{H}_{region} and holdout_mape_h{H}_{region} per region,
// interval_q10_h{H} and interval_q90_h{H}, gate_passed (0 or 1),
// mape_threshold, train_rows and holdout_rows. Undefined (NaN) metrics are
// left out.
func (r *PipelineResult) Metrics() map[string]float64 {
	out := map[string]float64{
		"train_rows":   float64(r.TrainRows),
		"holdout_rows": float64(r.TestRows),
		"gate_passed":  0,
	}
	if r.Passed {
		out["gate_passed"] = 1
	}
	put := func(k string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			out[k] = v
		}
	}
	all := func(prefix string, m map[int]validation.Metrics) {
		for h, v := range m {
			s := "_h" + strconv.Itoa(h)
			put(prefix+"mape"+s, v.MAPE)
			put(prefix+"wape"+s, v.WAPE)
			put(prefix+"rmse"+s, v.RMSE)
			put(prefix+"bias"+s, v.Bias)
		}
	}
	all("holdout_", r.Holdout.Model)
	all("naive_", r.Holdout.SeasonalNaive)
	all("havg_", r.Holdout.HistoricalAverage)
	all("backtest_", r.Backtest.Model)
	all("backtest_naive_", r.Backtest.SeasonalNaive)
	for region, m := range r.Holdout.ModelByRegion {
		for h, v := range m {
			put("holdout_wape_h"+strconv.Itoa(h)+"_"+region, v.WAPE)
			put("holdout_mape_h"+strconv.Itoa(h)+"_"+region, v.MAPE)
		}
	}
	for h, q := range r.Q10 {
		put("interval_q10_h"+strconv.Itoa(h), q)
	}
	for h, q := range r.Q90 {
		put("interval_q90_h"+strconv.Itoa(h), q)
	}
	return out
}

// runSplit trains on the minutes before origin and tests on forecasts made
// at origins in [origin, end), adding to acc. It returns the model, the
// actual/predicted ratios per horizon (where the prediction is positive and
// the actual counts towards MAPE) and the row counts.
func runSplit(ctx context.Context, hist []RegionHistory, origin, end time.Time, opts PipelineOptions,
	acc *evalAcc) (*model.Ensemble, map[int][]float64, [2]int, error) {
	schema := features.V1
	var X, Xt [][]float32
	var y []float32
	var test []sample
	havgs := make([]*validation.HistoricalAverage, len(hist))
	for ri, h := range hist {
		mins := h.Minutes
		if len(mins) == 0 {
			continue
		}
		cut := minuteIndex(mins, origin)
		stop := minuteIndex(mins, end)
		season := SeasonalityIndex(mins[:cut])
		searches := make([]float64, len(mins))
		for i, m := range mins {
			searches[i] = m.Searches
		}
		havgs[ri] = validation.NewHistoricalAverage(mins[0].Start, searches[:cut])
		// Training rows: origins and targets before the cut.
		X, y = appendSamples(X, y, mins, &season, schema, opts.Horizons, opts.Stride, 0, cut)
		// Test rows: origins t with t+1 ≥ cut (the forecast is made after
		// the cut) and targets inside [cut, stop).
		first := max(cut-1, windowMinutes-1)
		for t := first; t < stop; t += opts.Stride {
			window := mins[t-windowMinutes+1 : t+1]
			at := mins[t].Start.Add(time.Minute)
			online := features.FromMinutes(window, season[HourOfWeek(at)])
			for _, hz := range opts.Horizons {
				if hz <= 0 || t+hz >= stop {
					continue
				}
				nv, ok := validation.SeasonalNaive(searches, t, hz)
				if !ok {
					continue
				}
				actual := 0.0
				for _, m := range mins[t+1 : t+hz+1] {
					actual += m.Searches
				}
				Xt = append(Xt, schema.Vector(nil, online, at, hz))
				test = append(test, sample{region: ri, origin: at, horizon: hz, actual: actual, naive: nv})
			}
		}
	}
	if len(X) == 0 {
		return nil, nil, [2]int{}, fmt.Errorf("%w: no training rows before %s", ErrNoData, origin.Format(time.DateTime))
	}
	if len(Xt) == 0 {
		return nil, nil, [2]int{}, fmt.Errorf("%w: no test forecasts in %s .. %s with a week of history before them",
			ErrNoData, origin.Format(time.DateTime), end.Format(time.DateTime))
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, [2]int{}, err
	}
	ens, err := Train(ctx, X, y, opts.Train)
	if err != nil {
		return nil, nil, [2]int{}, err
	}
	pred := make([]float32, len(Xt))
	predict(ens, Xt, pred, opts.Train.Workers)
	ratios := map[int][]float64{}
	for i, s := range test {
		region := hist[s.region].Region.ID
		p := float64(pred[i])
		acc.add(region, s.horizon, p, s.naive, havgs[s.region].Forecast(s.origin, s.horizon), s.actual)
		if p > 0 && s.actual >= opts.MAPEMinActual {
			ratios[s.horizon] = append(ratios[s.horizon], s.actual/p)
		}
	}
	return ens, ratios, [2]int{len(X), len(Xt)}, nil
}

// minuteIndex is the index of the first minute starting at or after t.
func minuteIndex(mins []features.Minute, t time.Time) int {
	i, _ := slices.BinarySearchFunc(mins, t, func(m features.Minute, t time.Time) int { return m.Start.Compare(t) })
	return i
}

type evalAcc struct {
	minActual float64
	all       [3]map[int]*validation.Accumulator
	byRegion  [3]map[string]map[int]*validation.Accumulator
}

func newEvalAcc(minActual float64) *evalAcc {
	e := &evalAcc{minActual: minActual}
	for i := range e.all {
		e.all[i] = map[int]*validation.Accumulator{}
		e.byRegion[i] = map[string]map[int]*validation.Accumulator{}
	}
	return e
}

func (e *evalAcc) add(region string, h int, model, naive, havg, actual float64) {
	for i, p := range [3]float64{model, naive, havg} {
		a := e.all[i][h]
		if a == nil {
			a = &validation.Accumulator{MAPEMinActual: e.minActual}
			e.all[i][h] = a
		}
		a.Add(p, actual)
		r := e.byRegion[i][region]
		if r == nil {
			r = map[int]*validation.Accumulator{}
			e.byRegion[i][region] = r
		}
		if r[h] == nil {
			r[h] = &validation.Accumulator{MAPEMinActual: e.minActual}
		}
		r[h].Add(p, actual)
	}
}

func (e *evalAcc) evaluation() Evaluation {
	flat := func(m map[int]*validation.Accumulator) map[int]validation.Metrics {
		out := make(map[int]validation.Metrics, len(m))
		for h, a := range m {
			out[h] = a.Metrics()
		}
		return out
	}
	nested := func(m map[string]map[int]*validation.Accumulator) map[string]map[int]validation.Metrics {
		out := make(map[string]map[int]validation.Metrics, len(m))
		for r, a := range m {
			out[r] = flat(a)
		}
		return out
	}
	return Evaluation{
		Model: flat(e.all[0]), SeasonalNaive: flat(e.all[1]), HistoricalAverage: flat(e.all[2]),
		ModelByRegion: nested(e.byRegion[0]), NaiveByRegion: nested(e.byRegion[1]), AverageByRegion: nested(e.byRegion[2]),
	}
}
