package training

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/replay"
	"github.com/surgeworks/surge/validation"
)

// BenchmarkDepartures runs the pipeline of `make bench-forecast` on the
// real departures (../shared/data, or the file in SURGE_DEPARTURES) read
// straight from the CSV instead of through the stack and ClickHouse: the
// same history (zero-filled minutes per region, 2001-01-01 .. 2001-07-01),
// the last 14 days held out and the 14 before them for early stopping, so
// that settings can be compared on the validation days in a minute rather
// than a replay. It prints each horizon's validation WAPE (logged by the
// pipeline, the figure to choose settings on) and the holdout table.
// SURGE_BENCH_PIPELINE, a JSON PipelineOptions, overrides the options, e.g.
// {"HoldoutDays":14,"ValidationDays":14,"Folds":-1,"Horizons":[60],"Train":{"NumTrees":500,"LearningRate":0.05}}.
// SURGE_DEPARTURES_TO, a date, ends the history earlier (a short history
// from the first months, far from the holdout, e.g. 2001-01-29).
func BenchmarkDepartures(b *testing.B) {
	to := time.Date(2001, 7, 1, 0, 0, 0, 0, time.UTC)
	if v := os.Getenv("SURGE_DEPARTURES_TO"); v != "" {
		var err error
		if to, err = time.Parse(time.DateOnly, v); err != nil {
			b.Fatalf("SURGE_DEPARTURES_TO: %v", err)
		}
	}
	hist := departures(b, to)
	for range b.N {
		start := time.Now()
		opts := PipelineOptions{HoldoutDays: 14, ValidationDays: 14, Folds: -1, Train: Options{NumTrees: DefaultPipelineTrees}}
		if v := os.Getenv("SURGE_BENCH_PIPELINE"); v != "" {
			if err := json.Unmarshal([]byte(v), &opts); err != nil {
				b.Fatalf("SURGE_BENCH_PIPELINE: %v", err)
			}
		}
		res, err := RunPipeline(context.Background(), hist, opts)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%d training rows, %d holdout forecasts, %s\n", res.TrainRows, res.TestRows, time.Since(start).Round(time.Second))
		for _, h := range slices.Sorted(maps.Keys(res.Holdout.Model)) {
			m, n, a := res.Holdout.Model[h], res.Holdout.SeasonalNaive[h], res.Holdout.HistoricalAverage[h]
			fmt.Printf("holdout %4d min: model WAPE %.4f (MAPE %.3f)  naive %.4f  hist avg %.4f\n", h, m.WAPE, m.MAPE, n.WAPE, a.WAPE)
		}
	}
}

// departures reads the departures (../shared/data, or the file in
// SURGE_DEPARTURES) up to end, and skips the benchmark without them.
func departures(b *testing.B, end time.Time) []RegionHistory {
	path := os.Getenv("SURGE_DEPARTURES")
	if path == "" {
		path = "../../shared/data/departures-dev.csv.gz"
	}
	hist, err := readDepartures(path, end)
	if errors.Is(err, fs.ErrNotExist) {
		b.Skipf("%s not found: set SURGE_DEPARTURES to the departures file (../shared/data/README.md)", path)
	}
	if err != nil {
		b.Fatal(err)
	}
	return hist
}

// readDepartures reads a history file (replay's formats) into each
// region's searches per minute, from its first event to end.
func readDepartures(path string, end time.Time) ([]RegionHistory, error) {
	rd, closer, err := replay.Open(path)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	counts := map[string]map[time.Time]float64{}
	for {
		ev, _, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev.Type != ingest.TypeSearch || !ev.Timestamp.Before(end) {
			continue
		}
		if counts[ev.RegionID] == nil {
			counts[ev.RegionID] = map[time.Time]float64{}
		}
		counts[ev.RegionID][ev.Timestamp.UTC().Truncate(time.Minute)]++
	}
	var out []RegionHistory
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		var mins []features.Minute
		for _, t := range slices.SortedFunc(maps.Keys(counts[id]), time.Time.Compare) {
			mins = append(mins, features.Minute{Start: t, Searches: counts[id][t]})
		}
		if last := end.Add(-time.Minute); mins[len(mins)-1].Start.Before(last) {
			mins = append(mins, features.Minute{Start: last})
		}
		out = append(out, RegionHistory{Region: RegionSpec{ID: id}, Minutes: FillMinutes(mins)})
	}
	return out, nil
}

// BenchmarkDayAheadHour measures a forecast the product does not serve yet:
// the searches in the single hour that starts 23 hours after the origin (the
// data README's "24 h" reference, XGBoost 0.2017 WAPE), on the same split as
// BenchmarkDepartures (last 14 days held out, the 14 before them for early
// stopping). Its rows are the V3 rows of the 60-minute horizon with the
// seasonal windows (a day, one, two and three weeks before) taken before the
// target hour instead of before the origin, and the recent ones (the last
// hours, the means, the latest minute and signals) at the origin: nothing
// after the origin is read. Baselines: seasonal naive (the target hour a
// week earlier) and the historical average of its hour of week. It prints
// the validation and holdout WAPE; docs/forecasting.md has the figures and
// what serving it would take.
func BenchmarkDayAheadHour(b *testing.B) {
	const lead, hz = 23 * 60, 60
	end := time.Date(2001, 7, 1, 0, 0, 0, 0, time.UTC)
	hist := departures(b, end)
	schema := features.V3
	holdStart := end.Add(-14 * 24 * time.Hour)
	valStart := holdStart.Add(-14 * 24 * time.Hour)
	recent := []string{features.DemandLast, features.DemandPrev, features.DemandPrev2, features.DemandMean1h, features.DemandMean24h,
		features.DemandMean168h, features.Searches1m, features.Supply, features.SupplyDemand, features.WeatherSeverity,
		features.TrafficIndex, features.LocalEvent}
	for range b.N {
		start := time.Now()
		enc := &features.Encoding{RegionLevels: map[string]float64{}}
		series := make([]regionSeries, len(hist))
		havgs := make([]*validation.HistoricalAverage, len(hist))
		for i, h := range hist {
			series[i] = newRegionSeries(h)
			cut := minuteIndex(h.Minutes, holdStart)
			enc.RegionLevels[h.Region.ID] = series[i].prefix[cut] / float64(cut)
			havgs[i] = validation.NewHistoricalAverage(h.Minutes[0].Start, series[i].searches[:cut])
		}
		// row: the V3 row at the virtual origin o+lead (the target hour's
		// start), with the recent features replaced by those at o.
		row := func(s regionSeries, o int) []float32 {
			v := LongMemoryRow(schema, s.mins, s.prefix, o+lead, hz, s.id, enc)
			now := LongMemoryRow(schema, s.mins, s.prefix, o, hz, s.id, enc)
			for _, n := range recent {
				v[schema.Index(n)] = now[schema.Index(n)]
			}
			return v
		}
		var fit, val, test Dataset
		var naive, havg []float64
		for ri, s := range series {
			for o := schema.MemoryMinutes(); o+lead+hz <= len(s.mins); o++ {
				if !aligned(s.mins[0].Start, o, 60) {
					continue
				}
				at := s.mins[o-1].Start.Add(time.Minute)
				target := at.Add(lead * time.Minute)
				y := float32(s.prefix[o+lead+hz] - s.prefix[o+lead])
				switch {
				case target.Add(hz*time.Minute).After(holdStart) && at.Before(holdStart):
					// The target reaches into the holdout from before it: neither.
				case !at.Before(holdStart):
					nv, ok := validation.SeasonalNaive(s.searches, o+lead-1, hz)
					if !ok {
						continue
					}
					test.X, test.Y = append(test.X, row(s, o)), append(test.Y, y)
					naive, havg = append(naive, nv), append(havg, havgs[ri].Forecast(target, hz))
				case target.Add(hz * time.Minute).After(valStart):
					val.X, val.Y = append(val.X, row(s, o)), append(val.Y, y)
				default:
					fit.X, fit.Y = append(fit.X, row(s, o)), append(fit.Y, y)
				}
			}
		}
		var bestWAPE float64
		var best *model.Ensemble
		bestObj := ""
		for _, obj := range []string{ObjectivePoisson, ObjectiveTweedie} {
			ens, w, err := fitObjective(context.Background(), fit, val, obj, Options{NumTrees: DefaultPipelineTrees})
			if err != nil {
				b.Fatal(err)
			}
			if best == nil || w < bestWAPE {
				best, bestWAPE, bestObj = ens, w, obj
			}
		}
		tp := make([]float32, len(test.X))
		best.PredictBatch(test.X, tp)
		var m, n, a validation.Accumulator
		for i, y := range test.Y {
			m.Add(float64(tp[i]), float64(y))
			n.Add(naive[i], float64(y))
			a.Add(havg[i], float64(y))
		}
		fmt.Printf("day-ahead hour (the hour starting 23 h after the origin): %d fitting rows, %d validation, %d holdout forecasts, %s (%d trees)\n",
			len(fit.X), len(val.X), len(test.X), bestObj, len(best.Trees))
		fmt.Printf("validation WAPE %.4f\n", bestWAPE)
		fmt.Printf("holdout: model WAPE %.4f (MAPE %.3f)  naive %.4f  hist avg %.4f  %s\n",
			m.Metrics().WAPE, m.Metrics().MAPE, n.Metrics().WAPE, a.Metrics().WAPE, time.Since(start).Round(time.Second))
	}
}
