package training

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
)

// BootstrapOptions configures Bootstrap. A zero field takes the documented
// default.
type BootstrapOptions struct {
	Version     string         // model version; default "bootstrap"
	History     HistoryOptions // default: DefaultRegions over 14 days
	HoldoutDays int            // last days kept for evaluation; default 2
	Horizons    []int          // forecast horizons in minutes; default 5, 15, 60
	Stride      int            // minutes between samples; default 5
	Train       Options        // trainer options; defaults as in Options
	Logger      *slog.Logger   // default slog.Default()
}

func (o BootstrapOptions) withDefaults() BootstrapOptions {
	if o.Version == "" {
		o.Version = "bootstrap"
	}
	o.History = o.History.withDefaults()
	if o.HoldoutDays <= 0 {
		o.HoldoutDays = 2
	}
	if len(o.Horizons) == 0 {
		o.Horizons = slices.Clone(v1Horizons)
	}
	if o.Stride <= 0 {
		o.Stride = 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Train.Logger == nil {
		o.Train.Logger = o.Logger
	}
	return o
}

// Report is the evaluation of a bootstrapped model on the held-out days.
type Report struct {
	TrainRows, HoldoutRows int
	Trees                  int
	RMSE, WAPE             float64 // the model
	// The per-horizon mean of the training targets.
	BaselineRMSE, BaselineWAPE float64
	// Persistence: searches per minute over the last 15 minutes × horizon.
	NaiveRMSE, NaiveWAPE float64
	Duration             time.Duration
}

// Bootstrap trains a first demand model from synthetic history: it
// generates the history, builds features.V1 rows for each horizon, holds out
// the last HoldoutDays (the seasonality index comes from the training days
// only), trains, and evaluates on the holdout against a per-horizon mean and
// a persistence baseline. The model's metadata carries the name "demand",
// the version, the V1 schema hash and feature names, the parameters and the
// holdout metrics, and the trainer's feature importance.
func Bootstrap(ctx context.Context, opts BootstrapOptions) (*model.Ensemble, Report, error) {
	start := time.Now()
	opts = opts.withDefaults()
	if opts.HoldoutDays >= opts.History.Days {
		return nil, Report{}, fmt.Errorf("bootstrap: %w: %d holdout days of %d", ErrBadInput, opts.HoldoutDays, opts.History.Days)
	}
	schema := features.V1
	hist := GenerateHistory(opts.History)
	cut := (opts.History.Days - opts.HoldoutDays) * 24 * 60

	var X, Xh [][]float32
	var y, yh []float32
	for _, h := range hist {
		season := SeasonalityIndex(h.Minutes[:cut])
		X, y = appendSamples(X, y, h.Minutes, &season, schema, opts.Horizons, opts.Stride, 0, cut)
		Xh, yh = appendSamples(Xh, yh, h.Minutes, &season, schema, opts.Horizons, opts.Stride, cut, len(h.Minutes))
	}
	if len(X) == 0 || len(Xh) == 0 {
		return nil, Report{}, fmt.Errorf("bootstrap: %w: %d training and %d holdout rows", ErrBadInput, len(X), len(Xh))
	}
	e, err := Train(ctx, X, y, opts.Train)
	if err != nil {
		return nil, Report{}, fmt.Errorf("bootstrap: %w", err)
	}

	rep := Report{TrainRows: len(X), HoldoutRows: len(Xh), Trees: len(e.Trees)}
	hCol, sCol := schema.Index(features.HorizonMinutes), schema.Index(features.Searches15m)
	meanBy := map[float32]float64{}
	countBy := map[float32]int{}
	for i, r := range X {
		meanBy[r[hCol]] += float64(y[i])
		countBy[r[hCol]]++
	}
	for k := range meanBy {
		meanBy[k] /= float64(countBy[k])
	}
	pred := make([]float32, len(Xh))
	predict(e, Xh, pred, 0)
	var m, b, nv errStats
	for i, r := range Xh {
		m.add(float64(pred[i]), float64(yh[i]))
		b.add(meanBy[r[hCol]], float64(yh[i]))
		nv.add(float64(r[sCol])*float64(r[hCol]), float64(yh[i]))
	}
	rep.RMSE, rep.WAPE = m.rmse(), m.wape()
	rep.BaselineRMSE, rep.BaselineWAPE = b.rmse(), b.wape()
	rep.NaiveRMSE, rep.NaiveWAPE = nv.rmse(), nv.wape()
	rep.Duration = time.Since(start)

	params := opts.Train.Params()
	regions := make([]string, len(opts.History.Regions))
	for i, r := range opts.History.Regions {
		regions[i] = r.ID
	}
	hz := make([]string, len(opts.Horizons))
	for i, h := range opts.Horizons {
		hz[i] = strconv.Itoa(h)
	}
	params[model.ParamDataSource] = model.DataGenerated
	params["regions"] = strings.Join(regions, ",")
	params["history_days"] = strconv.Itoa(opts.History.Days)
	params["history_seed"] = strconv.FormatUint(opts.History.Seed, 10)
	params["holdout_days"] = strconv.Itoa(opts.HoldoutDays)
	params["horizons"] = strings.Join(hz, ",")
	params["stride"] = strconv.Itoa(opts.Stride)
	e.Meta = model.Metadata{
		Name:         "demand",
		Version:      opts.Version,
		SchemaHash:   schema.Hash(),
		FeatureNames: schema.Names(),
		TrainedAt:    time.Now().UTC(),
		Params:       params,
		Importance:   e.Meta.Importance,
		Metrics: map[string]float64{
			"holdout_rmse":  rep.RMSE,
			"holdout_wape":  rep.WAPE,
			"baseline_rmse": rep.BaselineRMSE,
			"baseline_wape": rep.BaselineWAPE,
			"naive_rmse":    rep.NaiveRMSE,
			"naive_wape":    rep.NaiveWAPE,
			"train_rows":    float64(rep.TrainRows),
			"holdout_rows":  float64(rep.HoldoutRows),
		},
	}
	opts.Logger.Info("bootstrapped demand model", "version", opts.Version, "train_rows", rep.TrainRows,
		"holdout_rows", rep.HoldoutRows, "trees", rep.Trees, "holdout_wape", round3(rep.WAPE),
		"baseline_wape", round3(rep.BaselineWAPE), "naive_wape", round3(rep.NaiveWAPE), "duration", rep.Duration)
	return e, rep, nil
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// errStats accumulates squared and absolute errors.
type errStats struct {
	n            int
	sq, abs, sum float64
}

func (s *errStats) add(pred, actual float64) {
	d := pred - actual
	s.n++
	s.sq += d * d
	s.abs += math.Abs(d)
	s.sum += math.Abs(actual)
}

func (s *errStats) rmse() float64 { return math.Sqrt(s.sq / float64(max(1, s.n))) }

// wape is the weighted absolute percentage error Σ|pred−actual| / Σ|actual|.
func (s *errStats) wape() float64 {
	if s.sum == 0 {
		return math.NaN()
	}
	return s.abs / s.sum
}
