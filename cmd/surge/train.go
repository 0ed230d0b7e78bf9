package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/training"
)

func newTrainCmd() *cobra.Command {
	var (
		cfg       config
		name      string
		days      int
		candidate bool
		loadHist  bool
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a demand model on a generated history and register it",
		Long: `train generates a synthetic history for the demo regions (daily and weekly
seasonality, weather, traffic and events), trains the gradient-boosted tree model on it,
evaluates it on the last two days against a mean and a persistence baseline, prints
the table and registers the model (active unless --candidate).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ch, err := openClickHouse(ctx, cfg, logger)
			if err != nil {
				return err
			}
			defer ch.Close()
			artifacts, err := registry.NewLocalStore(cfg.ModelDir)
			if err != nil {
				return err
			}
			status := registry.StatusActive
			if candidate {
				status = registry.StatusCandidate
			}
			e, rep, err := trainAndRegister(ctx, ch, registry.New(ch, artifacts), name, days, status, loadHist, logger)
			if err != nil {
				return err
			}
			printReport(cmd.OutOrStdout(), e, rep)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "demand", "model name")
	cmd.Flags().IntVar(&days, "days", 14, "days of generated history")
	cmd.Flags().BoolVar(&candidate, "candidate", false, "register as a candidate instead of making it active")
	cmd.Flags().BoolVar(&loadHist, "load-history", false, "also write the generated history into ClickHouse demand_minute")
	cfg.addConnFlags(cmd.Flags())
	return cmd
}

// bootstrapModel is the first start's model: a generated history ending now
// is loaded into ClickHouse (so historical averages exist too), trained on
// and registered as the active model.
func bootstrapModel(ctx context.Context, ch driver.Conn, reg *registry.Registry, name string, logger *slog.Logger) (registry.Entry, error) {
	e, _, err := trainAndRegister(ctx, ch, reg, name, 14, registry.StatusActive, true, logger)
	return e, err
}

func trainAndRegister(ctx context.Context, ch driver.Conn, reg *registry.Registry, name string, days int, status registry.Status,
	loadHistory bool, logger *slog.Logger) (registry.Entry, training.Report, error) {
	end := time.Now().UTC().Truncate(time.Hour)
	hopts := training.HistoryOptions{Days: days, Start: end.AddDate(0, 0, -days)}
	if loadHistory {
		h := analytics.NewHistory(ch, analytics.HistoryOptions{})
		for _, rh := range training.GenerateHistory(hopts) {
			if err := h.InsertDemandMinutes(ctx, rh.Region.ID, rh.Minutes); err != nil {
				return registry.Entry{}, training.Report{}, fmt.Errorf("load history of %s: %w", rh.Region.ID, err)
			}
		}
		logger.Info("generated history loaded into ClickHouse", "days", days, "regions", len(training.DefaultRegions))
	}
	existing, err := reg.List(ctx, name)
	if err != nil {
		return registry.Entry{}, training.Report{}, err
	}
	version := fmt.Sprintf("v%d", len(existing)+1)
	ens, rep, err := training.Bootstrap(ctx, training.BootstrapOptions{Version: version, History: hopts, Logger: logger})
	if err != nil {
		return registry.Entry{}, training.Report{}, err
	}
	ens.Meta.Name = name
	artifact, err := ens.MarshalONNX()
	if err != nil {
		return registry.Entry{}, training.Report{}, err
	}
	params, _ := json.Marshal(ens.Meta.Params)
	e, err := reg.Register(ctx, registry.Entry{
		Name:       name,
		SchemaHash: features.V1.Hash(),
		Metrics: map[string]float64{
			"holdout_rmse": rep.RMSE, "holdout_wape": rep.WAPE,
			"baseline_mean_wape": rep.BaselineWAPE, "baseline_persistence_wape": rep.NaiveWAPE,
			"train_rows": float64(rep.TrainRows), "holdout_rows": float64(rep.HoldoutRows),
		},
		Params:            params,
		FeatureImportance: ens.Meta.ImportanceGain(),
		TrainFrom:         hopts.Start,
		TrainTo:           end,
		Status:            status,
	}, artifact)
	if err != nil {
		return registry.Entry{}, training.Report{}, fmt.Errorf("register model: %w", err)
	}
	return e, rep, nil
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
