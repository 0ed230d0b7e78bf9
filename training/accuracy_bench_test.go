package training

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"text/tabwriter"
	"time"
)

// BenchmarkAccuracy prints the accuracy table of the model against both
// baselines, per horizon, on a simulated history with known structure (15
// days of the five demo regions; 2-day holdout). `make bench-train` runs it
// next to BenchmarkTrainLarge. It fails when the model does not beat
// seasonal naive on WAPE at every horizon.
func BenchmarkAccuracy(b *testing.B) {
	hist := GenerateHistory(HistoryOptions{Days: 15, Start: time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), Seed: 7})
	for range b.N {
		res, err := RunPipeline(context.Background(), hist, PipelineOptions{})
		if err != nil {
			b.Fatal(err)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\nholdout, %d regions, %d training rows, %d test rows, %s\n", len(res.Regions), res.TrainRows, res.TestRows, res.Duration.Round(time.Millisecond))
		fmt.Fprintln(tw, "horizon\tforecaster\tMAPE\tWAPE\tRMSE\tbias\t")
		var hs []int
		for h := range res.Holdout.Model {
			hs = append(hs, h)
		}
		sort.Ints(hs)
		for _, h := range hs {
			m, n, a := res.Holdout.Model[h], res.Holdout.SeasonalNaive[h], res.Holdout.HistoricalAverage[h]
			fmt.Fprintf(tw, "%d min\tmodel\t%.1f %%\t%.1f %%\t%.1f\t%+.1f %%\t\n", h, 100*m.MAPE, 100*m.WAPE, m.RMSE, 100*m.Bias)
			fmt.Fprintf(tw, "\tseasonal naive\t%.1f %%\t%.1f %%\t%.1f\t%+.1f %%\t\n", 100*n.MAPE, 100*n.WAPE, n.RMSE, 100*n.Bias)
			fmt.Fprintf(tw, "\thistorical average\t%.1f %%\t%.1f %%\t%.1f\t%+.1f %%\t\n", 100*a.MAPE, 100*a.WAPE, a.RMSE, 100*a.Bias)
			if !(m.WAPE < n.WAPE) {
				b.Errorf("horizon %d: model WAPE %.3f does not beat seasonal naive %.3f", h, m.WAPE, n.WAPE)
			}
		}
		tw.Flush()
		fmt.Printf("gate passed: %v %v\n", res.Passed, res.Reasons)
	}
}
