package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/retrain"
	"github.com/surgeworks/surge/rollout"
	"github.com/surgeworks/surge/training"
	"github.com/surgeworks/surge/validation"
)

// retrainJob wires the scheduled retrain: the configured range, real
// history only, the v3 pipeline (v2 on a shorter history) with the
// configured calendar, and the canary of a model that passed the gate.
func (c *config) retrainJob(ch driver.Conn, models *registry.Registry, rollouts *rollout.Controller, logger *slog.Logger) (*retrain.Job, error) {
	w := c.RetrainWindow
	if w == "" {
		w = "28d"
	}
	window, from, to, err := parseRange(w, c.RetrainFrom, c.RetrainTo)
	if err != nil {
		return nil, fmt.Errorf("retrain range: %w", err)
	}
	holidays, err := features.ParseCalendar(c.Holidays)
	if err != nil {
		return nil, fmt.Errorf("HOLIDAYS: %w", err)
	}
	train := func(ctx context.Context, from, to time.Time) (registry.Entry, *training.PipelineResult, error) {
		pc := training.Job{Name: c.ModelName, From: from, To: to}
		pc.Pipeline.Holidays = holidays
		pc.Pipeline.Train.NumTrees = training.DefaultPipelineTrees
		return training.RunJob(ctx, ch, models, pc, logger)
	}
	start := func(ctx context.Context, version string) error {
		_, err := rollouts.Start(ctx, version, false)
		return err
	}
	return retrain.New(ch, train, start, retrain.Options{
		Window: window, From: from, To: to, MinRealDays: c.RetrainMinDays, NoRollout: !c.RetrainRollout, Logger: logger,
	}), nil
}

// errRejected is returned by `surge train` when the gate rejected the model
// (the run is recorded; the exit status is 1 so scripts notice).
var errRejected = errors.New("model rejected by the validation gate")

func newTrainCmd() *cobra.Command {
	var (
		cfg        config
		pc         training.Job
		window     string
		from, to   string
		regions    string
		thresholds string
		objectives string
		holidays   string
		horizons   string
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train, validate and register a demand model",
		Long: `train reads the per-minute demand history from ClickHouse (demand_minute over [--from, --to),
or the last --window before --to or now; load one with ` + "`surge replay`" + ` or ` + "`surge simulate --history`" + `), or generates one
with --source synthetic, and trains the feature schema --schema: v3 (default; per horizon the
demand over the last H and the two H before, the same H a day and a week earlier and what
followed them, what followed two and three weeks earlier, 1 h/24 h/168 h means, the region's
level, the clock, --holidays, supply and signals; one ensemble per horizon 5, 15, 60 and 1440
minutes, or --horizons), v2 (v3 without the three extra windows: 8 days of memory instead of 21;
the default when the history is too short for v3) or v1 (the last 15 minutes, one ensemble).
When the history leaves v2 less than two weeks of fitting rows too, the default backtests v1
and v2 and keeps the one with the lower mean WAPE. Rows are built exactly as serving builds
them. The number of trees (at most --trees) and, for v2 and v3, the objective among --objective are chosen on the --validation-days before the holdout. Validation:
a rolling-origin backtest (--folds days before the holdout) and a holdout of the last
--holdout-days days, the model beside two baselines (seasonal naive: the same minutes a week
earlier; the region's hour-of-week average over the training days).

--from and --to take RFC 3339 times or plain dates (UTC midnight; --to is exclusive), so a
history from any year trains as it is: the holdout is its last --holdout-days days and the
backtest folds lie before them.

The model is registered as a candidate when, for every horizon on the holdout, it beats
seasonal naive and the historical average on WAPE and its MAPE over the periods with at least
--mape-min-actual demand is within the bound (--mape-threshold for every horizon, or by
default 15 % with 60 %, 35 % and 20 % at 5, 15 and 60 minutes; --mape-thresholds per
horizon); otherwise it is recorded as rejected with its reasons (and train exits with status
1). The registered metrics include the empirical 10 %/90 % quantiles of actual/predicted per horizon (interval_q10_h15, …).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if pc.Window, pc.From, pc.To, err = parseRange(window, from, to); err != nil {
				return err
			}
			if pc.Pipeline.MAPEThresholds, err = parseThresholds(thresholds); err != nil {
				return err
			}
			if regions != "" {
				pc.Regions = strings.Split(regions, ",")
			}
			if t := pc.Pipeline.MAPEThreshold; !(t >= 0 && t < 10) {
				return fmt.Errorf("--mape-threshold %v: want a fraction > 0 (0.15 = 15 %%)", t)
			}
			if err := parseObjectives(&pc, objectives); err != nil {
				return err
			}
			for _, h := range splitList(horizons) {
				n, err := strconv.Atoi(h)
				if err != nil || n <= 0 || n > 1440 {
					return fmt.Errorf("--horizons %q: want minutes between 1 and 1440, comma-separated", horizons)
				}
				pc.Pipeline.Horizons = append(pc.Pipeline.Horizons, n)
			}
			if pc.Pipeline.Holidays, err = features.ParseCalendar(holidays); err != nil {
				return fmt.Errorf("--holidays: %w", err)
			}
			ctx := cmd.Context()
			ch, err := openClickHouse(ctx, cfg, logger)
			if err != nil {
				return err
			}
			defer ch.Close()
			artifacts, err := registry.OpenStore(ctx, cfg.ModelStoreURL, cfg.ModelDir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			progressOut := cmd.ErrOrStderr()
			start := time.Now()
			pc.Pipeline.Progress = func(p training.Progress) {
				const width = 20
				done := width * (p.Step - 1) / max(1, p.Steps)
				fmt.Fprintf(progressOut, "[%s%s] %d/%d %s (%s)\n", strings.Repeat("#", done), strings.Repeat(".", width-done),
					p.Step, p.Steps, p.What, time.Since(start).Round(100*time.Millisecond))
			}
			pc.Pipeline.Logger = slog.New(slog.DiscardHandler)
			if cfg.LogLevel == "debug" {
				pc.Pipeline.Logger = logger
			}
			e, res, err := training.RunJob(ctx, ch, registry.New(ch, artifacts), pc, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(progressOut, "[%s] done in %s\n", strings.Repeat("#", 20), res.Duration.Round(time.Millisecond))
			printPipelineReport(out, e, res)
			if !res.Passed {
				return fmt.Errorf("%w: %s %s recorded as rejected: %s", errRejected, e.Name, e.Version, strings.Join(res.Reasons, "; "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pc.Name, "name", "demand", "model name")
	f.StringVar(&pc.Source, "source", training.SourceClickHouse, "training data: clickhouse (demand_minute over --window) or synthetic (generated --days)")
	f.StringVar(&window, "window", "28d", "clickhouse source: history window ending at --to or now (e.g. 28d, 336h); ignored with --from")
	f.StringVar(&from, "from", "", "clickhouse source: start of the history, RFC 3339 or a date (2001-01-01); default --window before --to")
	f.StringVar(&to, "to", "", "clickhouse source: end of the history (exclusive), RFC 3339 or a date; default now")
	f.StringVar(&regions, "regions", "", "clickhouse source: comma-separated regions (default: every region with data in the window)")
	f.IntVar(&pc.Days, "days", 14, "synthetic source: days of generated history")
	f.BoolVar(&pc.LoadHist, "load-history", false, "synthetic source: also write the generated history into ClickHouse demand_minute")
	f.BoolVar(&pc.Activate, "activate", false, "make the model active right away when it passes the gate (default: candidate, for the rollout)")
	f.StringVar(&pc.Pipeline.Schema, "schema", "", "feature schema: v3 or v2 (long memory, one ensemble per horizon; v3 also reads two and three weeks back) or v1 (default v3, or v2 when the history leaves v3 less than two weeks of fitting rows, or with less for v2 the better of v1 and v2 on the backtest)")
	f.StringVar(&objectives, "objective", "", "loss: l2, poisson or tweedie; with v2 or v3 a comma-separated list tried per horizon on the validation days (default poisson,tweedie; v1 default l2)")
	f.IntVar(&pc.Pipeline.Train.NumTrees, "trees", training.DefaultPipelineTrees, "most boosting rounds per horizon (early stopping on the validation days picks fewer)")
	f.IntVar(&pc.Pipeline.ValidationDays, "validation-days", 0, "v2, v3: days before the holdout (and before each fold) kept out of fitting for early stopping and the objective (default --holdout-days)")
	f.StringVar(&horizons, "horizons", "", "forecast horizons in minutes, comma-separated (default 5,15,60,1440 for v2 and v3, without 1440 on less than two weeks of fitting history; 5,15,60 for v1); v3 wants three weeks of history before its first row")
	f.StringVar(&holidays, "holidays", "", "v2, v3: holiday calendar, comma-separated dates YYYY-MM-DD (stored with the model)")
	f.Float64Var(&pc.Pipeline.MAPEThreshold, "mape-threshold", 0, "largest holdout MAPE per horizon that passes the gate, a fraction (default 0.15, with 5=0.6,15=0.35,60=0.2 unless set)")
	f.StringVar(&thresholds, "mape-thresholds", "", "per-horizon MAPE bounds overriding --mape-threshold, minutes=fraction comma-separated (5=0.6,15=0.3)")
	f.Float64Var(&pc.Pipeline.MAPEMinActual, "mape-min-actual", 5, "only periods with at least this demand count towards MAPE and its gate")
	f.IntVar(&pc.Pipeline.HoldoutDays, "holdout-days", 2, "last days held out for the gate and the intervals")
	f.IntVar(&pc.Pipeline.Folds, "folds", 2, "rolling-origin backtest folds of one day before the holdout (-1: none)")
	cfg.addConnFlags(f)
	return cmd
}

// parseObjectives sets the pipeline's objectives from --objective.
func parseObjectives(pc *training.Job, s string) error {
	list := splitList(s)
	for _, o := range list {
		switch o {
		case training.ObjectiveL2, training.ObjectivePoisson, training.ObjectiveTweedie:
		default:
			return fmt.Errorf("--objective %q: want l2, poisson or tweedie", o)
		}
	}
	switch {
	case pc.Pipeline.Schema == "v1" && len(list) > 1:
		return fmt.Errorf("--objective %q: v1 trains one objective", s)
	case pc.Pipeline.Schema == "v1" && len(list) == 1:
		pc.Pipeline.Train.Objective = list[0]
	case pc.Pipeline.Schema == "v1":
		pc.Pipeline.Train.Objective = training.ObjectiveL2
	default:
		pc.Pipeline.Objectives = list
	}
	return nil
}

// parseRange checks the history range of a training run: a window (see
// parseWindow) and optional RFC 3339 or date bounds (see parseTime).
func parseRange(window, from, to string) (w time.Duration, f, t time.Time, err error) {
	if w, err = parseWindow(window); err != nil {
		return 0, f, t, err
	}
	if f, err = parseTime("--from", from); err != nil {
		return 0, f, t, err
	}
	if t, err = parseTime("--to", to); err != nil {
		return 0, f, t, err
	}
	end := t
	if end.IsZero() {
		end = time.Now()
	}
	if !f.IsZero() && !f.Before(end) {
		return 0, f, t, fmt.Errorf("--from %s is not before --to %s", f.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return w, f, t, nil
}

// parseTime accepts an RFC 3339 time or a date (UTC midnight); empty is
// the zero time.
func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2001-06-17T00:00:00Z) or a date (2001-06-17)", flag, s)
}

// parseThresholds reads per-horizon MAPE bounds: "5=0.6,15=0.3".
func parseThresholds(s string) (map[int]float64, error) {
	if s == "" {
		return nil, nil
	}
	out := map[int]float64{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		h, herr := strconv.Atoi(strings.TrimSpace(k))
		t, terr := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || herr != nil || terr != nil || h <= 0 || !(t > 0 && t < 10) {
			return nil, fmt.Errorf("--mape-thresholds %q: want minutes=fraction entries, e.g. 5=0.6,15=0.3 (bad entry %q)", s, kv)
		}
		out[h] = t
	}
	return out, nil
}

// parseWindow accepts a number of days ("28d") or a Go duration ("336h").
func parseWindow(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("--window %q: want days (28d) or a duration (336h)", s)
}

// printPipelineReport prints, per horizon, the model against seasonal naive
// and the historical average on the holdout (MAPE, WAPE, RMSE, bias), the
// backtest WAPE, the intervals, per-region WAPE and the gate decision.
func printPipelineReport(w io.Writer, e registry.Entry, res *training.PipelineResult) {
	schema := res.Model.Meta.Params["schema"]
	if c := res.Model.Meta.Params["schema_backtest_wape"]; c != "" {
		schema += " (backtest mean WAPE " + c + ")"
	}
	fmt.Fprintf(w, "%s %s (%s): schema %s, %d trees, %d training rows, %d holdout forecasts, regions %s, trained on %s .. %s, %s\n\n",
		e.Name, e.Version, e.Status, schema, len(res.Model.Trees), res.TrainRows, res.TestRows, strings.Join(res.Regions, ","),
		res.TrainFrom.Format(time.DateTime), res.TrainTo.Format(time.DateTime), res.Duration.Round(time.Millisecond))
	hs := make([]int, 0, len(res.Holdout.Model))
	for h := range res.Holdout.Model {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	pct := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "holdout\tforecaster\tMAPE\tWAPE\tRMSE\tbias\tbacktest WAPE\t")
	for _, h := range hs {
		for _, r := range []struct {
			name    string
			m, back validation.Metrics
		}{
			{"model", res.Holdout.Model[h], res.Backtest.Model[h]},
			{"seasonal naive", res.Holdout.SeasonalNaive[h], res.Backtest.SeasonalNaive[h]},
			{"hist. average", res.Holdout.HistoricalAverage[h], res.Backtest.HistoricalAverage[h]},
		} {
			back := "-"
			if r.back.N > 0 {
				back = pct(r.back.WAPE)
			}
			fmt.Fprintf(tw, "%d min\t%s\t%s\t%s\t%.1f\t%+.1f%%\t%s\t\n", h, r.name, pct(r.m.MAPE), pct(r.m.WAPE), r.m.RMSE, 100*r.m.Bias, back)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "region WAPE (model / naive)\t"
	for _, h := range hs {
		header += fmt.Sprintf("%d min\t", h)
	}
	fmt.Fprintln(tw, header)
	regions := slices.Sorted(func(yield func(string) bool) {
		for r := range res.Holdout.ModelByRegion {
			if !yield(r) {
				return
			}
		}
	})
	for _, r := range regions {
		line := r + "\t"
		for _, h := range hs {
			line += pct(res.Holdout.ModelByRegion[r][h].WAPE) + " / " + pct(res.Holdout.NaiveByRegion[r][h].WAPE) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()

	fmt.Fprintln(w)
	for _, h := range hs {
		fmt.Fprintf(w, "80%% interval %d min: forecast × [%.3f, %.3f]\n", h, res.Q10[h], res.Q90[h])
	}
	if res.Passed {
		fmt.Fprintf(w, "gate: PASSED (beats seasonal naive on WAPE, MAPE within threshold) → %s\n", e.Status)
	} else {
		fmt.Fprintf(w, "gate: REJECTED → recorded as %s:\n", e.Status)
		for _, r := range res.Reasons {
			fmt.Fprintf(w, "  - %s\n", r)
		}
	}
}

func printReport(w io.Writer, e registry.Entry, rep training.Report) {
	fmt.Fprintf(w, "registered %s %s (%s): %d trees, %d training rows, %d holdout rows, %s\n\n",
		e.Name, e.Version, e.Status, rep.Trees, rep.TrainRows, rep.HoldoutRows, rep.Duration.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "holdout\tRMSE\tWAPE\t")
	fmt.Fprintf(tw, "model\t%.1f\t%.3f\t\n", rep.RMSE, rep.WAPE)
	fmt.Fprintf(tw, "persistence (last 15 min)\t%.1f\t%.3f\t\n", rep.NaiveRMSE, rep.NaiveWAPE)
	fmt.Fprintf(tw, "mean per horizon\t%.1f\t%.3f\t\n", rep.BaselineRMSE, rep.BaselineWAPE)
	tw.Flush()
}
