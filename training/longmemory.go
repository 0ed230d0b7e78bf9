package training

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/validation"
)

// trainStride and evalStride are the minutes between the origins of the
// training rows and of the test forecasts of horizon h: forecasts made every
// minute for an hour ahead are near copies of each other, so long horizons
// get coarser origins (training time stays proportional to information). The
// origins are whole multiples of the stride on the clock, so at 60 minutes
// the test forecasts are those of whole hours.
func trainStride(h int) int { return max(15, min(h, 60)) }
func evalStride(h int) int  { return max(5, min(h, 60)) }

// regionSeries is one region's history ready for V2 rows.
type regionSeries struct {
	id       string
	mins     []features.Minute
	searches []float64
	prefix   []float64
}

func newRegionSeries(h RegionHistory) regionSeries {
	s := make([]float64, len(h.Minutes))
	for i, m := range h.Minutes {
		s[i] = m.Searches
	}
	return regionSeries{id: h.Region.ID, mins: h.Minutes, searches: s, prefix: features.PrefixSum(s)}
}

// LongMemoryRow builds the row of a long-memory schema (V2, V3) for a region
// at origin index o (the minutes before o are closed; o ≥ 1) and horizon h:
// features.FromMinutes over the 15 minutes before o for the short-term and
// supply features, features.Memory over the whole history before o, then
// schema.VectorFor. The streaming consumer writes the same features (from
// the same two functions) for serving.
func LongMemoryRow(schema features.Schema, mins []features.Minute, prefix []float64, o, h int, region string, enc *features.Encoding) []float32 {
	// Sized once for the long-memory keys too: growing the map was a tenth
	// of building the rows.
	online := make(features.Online, 2*len(schema))
	maps.Copy(online, features.FromMinutes(mins[max(0, o-windowMinutes):o], 1))
	features.Memory(online, features.PrefixWindow(prefix, o), []int{h})
	at := mins[o-1].Start.Add(time.Minute)
	row, _ := schema.VectorFor(nil, features.Input{Online: online, At: at, Horizon: h, Region: region, Encoding: enc})
	return row
}

// aligned reports whether minute index o of a history starting at start is
// a whole multiple of stride minutes on the clock.
func aligned(start time.Time, o, stride int) bool {
	m := start.Unix()/60 + int64(o)
	return m%int64(stride) == 0
}

// runSplitLongMemory is runSplit for the long-memory schemas (opts.Schema
// v2 or v3): one ensemble per horizon (rows at
// trainStride origins with the whole memory window behind them; the last
// ValidationDays before the cut for early stopping and the choice of the
// objective), gated on the horizon column into one model.
func runSplitLongMemory(ctx context.Context, hist []RegionHistory, origin, end time.Time, opts PipelineOptions,
	acc *evalAcc) (*model.Ensemble, map[int][]float64, [2]int, error) {
	schema := features.Schemas[opts.Schema]
	memory := schema.MemoryMinutes()
	workers := opts.Train.withDefaults().Workers
	enc := &features.Encoding{RegionLevels: map[string]float64{}, Holidays: opts.Holidays}
	series := make([]regionSeries, len(hist))
	cuts, stops := make([]int, len(hist)), make([]int, len(hist))
	havgs := make([]*validation.HistoricalAverage, len(hist))
	for i, h := range hist {
		series[i] = newRegionSeries(h)
		cuts[i], stops[i] = minuteIndex(h.Minutes, origin), minuteIndex(h.Minutes, end)
		if cuts[i] > 0 {
			enc.RegionLevels[h.Region.ID] = series[i].prefix[cuts[i]] / float64(cuts[i])
			havgs[i] = validation.NewHistoricalAverage(h.Minutes[0].Start, series[i].searches[:cuts[i]])
		}
	}
	valMinutes := opts.ValidationDays * 24 * 60
	horizons := slices.Sorted(slices.Values(opts.Horizons))
	col := schema.Index(features.HorizonMinutes)
	var parts []model.Part
	params := map[string]string{features.EncodingParam: enc.String()}
	trainRows := 0
	imp := make([]model.FeatureImportance, schema.Len())
	for k, hz := range horizons {
		if err := ctx.Err(); err != nil {
			return nil, nil, [2]int{}, err
		}
		// Rows of each region in parallel, then concatenated in region
		// order, so the datasets do not depend on the number of workers.
		type regionRows struct{ fit, val, recent Dataset }
		per := make([]regionRows, len(series))
		stride := trainStride(hz)
		parallelFor(workers, len(series), func(ri int) {
			s, out := series[ri], &per[ri]
			if cuts[ri] == 0 {
				return
			}
			start := s.mins[0].Start
			for o := memory; o+hz <= cuts[ri]; o++ {
				// Validation rows sit on the test forecasts' origins.
				isVal := o+hz > cuts[ri]-valMinutes
				if !aligned(start, o, stride) && !(isVal && aligned(start, o, evalStride(hz))) {
					continue
				}
				row := LongMemoryRow(schema, s.mins, s.prefix, o, hz, s.id, enc)
				y := float32(s.prefix[o+hz] - s.prefix[o])
				if isVal {
					if aligned(start, o, evalStride(hz)) {
						out.val.X, out.val.Y = append(out.val.X, row), append(out.val.Y, y)
					}
				} else {
					out.fit.X, out.fit.Y = append(out.fit.X, row), append(out.fit.Y, y)
					if o+hz > cuts[ri]-valMinutes-selectionMinutes {
						out.recent.X, out.recent.Y = append(out.recent.X, row), append(out.recent.Y, y)
					}
				}
			}
		})
		var fit, val, recent Dataset
		for _, r := range per {
			fit.X, fit.Y = append(fit.X, r.fit.X...), append(fit.Y, r.fit.Y...)
			val.X, val.Y = append(val.X, r.val.X...), append(val.Y, r.val.Y...)
			recent.X, recent.Y = append(recent.X, r.recent.X...), append(recent.Y, r.recent.Y...)
		}
		if len(fit.X) == 0 || len(val.X) == 0 {
			return nil, nil, [2]int{}, fmt.Errorf("%w: horizon %d min: %d training and %d validation rows before %s: the long-memory features need %d days of history before the first row and %d validation days",
				ErrNoData, hz, len(fit.X), len(val.X), origin.Format(time.DateTime), memory/1440, opts.ValidationDays)
		}
		trainRows += len(fit.X) + len(val.X)
		hopts := opts
		if hopts.Train.Subsample == 0 && len(fit.X) > treeRows {
			hopts.Train.Subsample = float64(treeRows) / float64(len(fit.X))
		}
		ens, obj, valWAPE, err := bestObjective(ctx, fit, recent, val, hopts)
		if err != nil {
			return nil, nil, [2]int{}, fmt.Errorf("horizon %d min: %w", hz, err)
		}
		opts.Logger.Info("trained horizon", "horizon_minutes", hz, "objective", obj, "trees", len(ens.Trees),
			"validation_wape", valWAPE, "fit_rows", len(fit.X), "validation_rows", len(val.X))
		params["objective_h"+strconv.Itoa(hz)] = obj
		params["trees_h"+strconv.Itoa(hz)] = strconv.Itoa(len(ens.Trees))
		for i, fi := range ens.Meta.Importance {
			imp[i].Gain += fi.Gain
			imp[i].Splits += fi.Splits
		}
		lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
		if k > 0 {
			lo = float32(horizons[k-1]+hz) / 2
		}
		if k < len(horizons)-1 {
			hi = float32(hz+horizons[k+1]) / 2
		}
		parts = append(parts, model.Part{Lo: lo, Hi: hi, Ensemble: ens})
	}
	ens, err := model.Gated(col, parts)
	if err != nil {
		return nil, nil, [2]int{}, err
	}
	ens.Meta.Importance = imp
	ens.Meta.Params = params

	// Test forecasts: origins at or after the cut, targets before stop;
	// built per region in parallel, concatenated in region order.
	type regionTests struct {
		X    [][]float32
		test []sample
	}
	perTest := make([]regionTests, len(series))
	parallelFor(workers, len(series), func(ri int) {
		s, out := series[ri], &perTest[ri]
		if cuts[ri] == 0 {
			return
		}
		start := s.mins[0].Start
		for _, hz := range horizons {
			for o := max(cuts[ri], memory); o+hz <= stops[ri]; o++ {
				if !aligned(start, o, evalStride(hz)) {
					continue
				}
				nv, ok := validation.SeasonalNaive(s.searches, o-1, hz)
				if !ok {
					continue
				}
				out.X = append(out.X, LongMemoryRow(schema, s.mins, s.prefix, o, hz, s.id, enc))
				at := s.mins[o-1].Start.Add(time.Minute)
				out.test = append(out.test, sample{region: ri, origin: at, horizon: hz, actual: s.prefix[o+hz] - s.prefix[o], naive: nv})
			}
		}
	})
	var Xt [][]float32
	var test []sample
	for _, r := range perTest {
		Xt, test = append(Xt, r.X...), append(test, r.test...)
	}
	if len(Xt) == 0 {
		return nil, nil, [2]int{}, fmt.Errorf("%w: no test forecasts in %s .. %s with a week of history before them",
			ErrNoData, origin.Format(time.DateTime), end.Format(time.DateTime))
	}
	pred := make([]float32, len(Xt))
	predict(ens, Xt, pred, workers)
	ratios := map[int][]float64{}
	for i, s := range test {
		p := float64(pred[i])
		acc.add(series[s.region].id, s.horizon, p, s.naive, havgs[s.region].Forecast(s.origin, s.horizon), s.actual)
		if p > 0 && s.actual >= opts.MAPEMinActual {
			ratios[s.horizon] = append(ratios[s.horizon], s.actual/p)
		}
	}
	return ens, ratios, [2]int{trainRows, len(Xt)}, nil
}

// treeRows: with more fitting rows than this (and no Options.Subsample set),
// each tree is grown on a random treeRows of them, so a tree's cost stays
// bounded where more origins add little (on departures-dev's validation days
// the 5- and 15-minute horizons, 630k rows, lost 0.1–0.2 % WAPE and 30 % of
// the training time).
const treeRows = 300_000

// selectionMinutes and selectionRows: with more than selectionRows fitting
// rows, the objectives are compared on models fitted to the last
// selectionMinutes before the validation days only, and the winner is then
// fitted to all rows, so comparing objectives costs a fraction of a fit.
const (
	selectionMinutes = 28 * 24 * 60
	selectionRows    = 200_000
)

// bestObjective picks, of opts.Objectives, the one with the lowest WAPE on
// val (early stopping on val too) and returns its model fitted to fit; with
// many rows the comparison fits recent instead (see selectionRows).
func bestObjective(ctx context.Context, fit, recent, val Dataset, opts PipelineOptions) (*model.Ensemble, string, float64, error) {
	compare := fit
	if len(opts.Objectives) > 1 && len(fit.X) > selectionRows && len(recent.X) > 0 {
		compare = recent
	}
	var best *model.Ensemble
	bestObj, bestWAPE := "", math.Inf(1)
	for _, obj := range opts.Objectives {
		ens, w, err := fitObjective(ctx, compare, val, obj, opts.Train)
		if err != nil {
			return nil, "", 0, err
		}
		if best == nil || w < bestWAPE {
			best, bestObj, bestWAPE = ens, obj, w
		}
	}
	if len(compare.X) != len(fit.X) {
		ens, w, err := fitObjective(ctx, fit, val, bestObj, opts.Train)
		if err != nil {
			return nil, "", 0, err
		}
		best, bestWAPE = ens, w
	}
	return best, bestObj, bestWAPE, nil
}

// fitObjective fits one objective with early stopping on val and returns
// the model and its WAPE on val.
func fitObjective(ctx context.Context, fit, val Dataset, obj string, o Options) (*model.Ensemble, float64, error) {
	o.Objective = obj
	o.Validation = val
	res, err := Fit(ctx, fit.X, fit.Y, o)
	if err != nil {
		return nil, 0, err
	}
	var a validation.Accumulator
	for i, p := range res.ValidPred {
		a.Add(float64(p), float64(val.Y[i]))
	}
	return res.Model, a.Metrics().WAPE, nil
}
