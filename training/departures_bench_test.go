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
	"github.com/surgeworks/surge/replay"
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
	path := os.Getenv("SURGE_DEPARTURES")
	if path == "" {
		path = "../../shared/data/departures-dev.csv.gz"
	}
	to := time.Date(2001, 7, 1, 0, 0, 0, 0, time.UTC)
	if v := os.Getenv("SURGE_DEPARTURES_TO"); v != "" {
		var err error
		if to, err = time.Parse(time.DateOnly, v); err != nil {
			b.Fatalf("SURGE_DEPARTURES_TO: %v", err)
		}
	}
	hist, err := readDepartures(path, to)
	if errors.Is(err, fs.ErrNotExist) {
		b.Skipf("%s not found: set SURGE_DEPARTURES to the departures file (../shared/data/README.md)", path)
	}
	if err != nil {
		b.Fatal(err)
	}
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
