package training

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/registry"
)

// Sources of a Job's history.
const (
	SourceClickHouse = "clickhouse" // demand_minute over the Job's range
	SourceSynthetic  = "synthetic"  // GenerateHistory
)

// Job is one training run as `surge train` and the scheduled retrain run
// it: where the history comes from, the pipeline, and what to record.
type Job struct {
	Name   string        // model name in the registry
	Source string        // SourceClickHouse (default) or SourceSynthetic
	Window time.Duration // clickhouse: how far back from To (or From); default DefaultWindow
	// From and To bound the clickhouse history explicitly, [From, To):
	// zero From means To − Window, zero To means now.
	From, To time.Time
	Regions  []string // clickhouse: default every region with data
	Days     int      // synthetic: days of generated history; default 14
	LoadHist bool     // synthetic: also write the history into demand_minute
	Activate bool     // make the model active when the gate passes (default: candidate)
	Pipeline PipelineOptions
}

// RunJob reads the job's history (ClickHouse demand_minute over its range,
// or a generated one), runs RunPipeline (backtest, holdout, baselines, gate)
// and records the model: candidate when the gate passes (active with
// Activate), rejected with its reasons otherwise.
func RunJob(ctx context.Context, ch driver.Conn, reg *registry.Registry, job Job, logger *slog.Logger) (registry.Entry, *PipelineResult, error) {
	var hist []RegionHistory
	switch job.Source {
	case SourceClickHouse, "":
		var err error
		hist, err = LoadHistory(ctx, ch, LoadOptions{Regions: job.Regions, Window: job.Window, From: job.From, End: job.To})
		if err != nil {
			return registry.Entry{}, nil, fmt.Errorf("%w (or train on generated data with --source synthetic)", err)
		}
	case SourceSynthetic:
		days := job.Days
		if days <= 0 {
			days = 14
		}
		end := time.Now().UTC().Truncate(time.Hour)
		hist = GenerateHistory(HistoryOptions{Days: days, Start: end.AddDate(0, 0, -days)})
		if job.LoadHist {
			if err := insertHistory(ctx, ch, hist, logger); err != nil {
				return registry.Entry{}, nil, err
			}
		}
	default:
		return registry.Entry{}, nil, fmt.Errorf("unknown --source %q: want %s or %s", job.Source, SourceClickHouse, SourceSynthetic)
	}
	res, err := RunPipeline(ctx, hist, job.Pipeline)
	if err != nil {
		return registry.Entry{}, nil, err
	}
	res.Model.Meta.Params[model.ParamDataSource] = model.DataReal
	if job.Source == SourceSynthetic {
		res.Model.Meta.Params[model.ParamDataSource] = model.DataGenerated
	}
	e, err := RegisterResult(ctx, reg, job.Name, res)
	if err != nil {
		return registry.Entry{}, res, err
	}
	if res.Passed && job.Activate {
		if err := reg.SetStatus(ctx, e.Name, e.Version, registry.StatusActive); err != nil {
			return e, res, fmt.Errorf("activate %s %s: %w", e.Name, e.Version, err)
		}
		e.Status = registry.StatusActive
	}
	return e, res, nil
}

// BootstrapJob is a model trained on a generated history ending now, as
// the first start of `surge dev` registers it.
type BootstrapJob struct {
	Name        string          // model name in the registry
	Days        int             // days of generated history
	Status      registry.Status // status it is registered with
	LoadHistory bool            // also write the history into demand_minute (historical averages then exist too)
}

// RegisterBootstrap trains Bootstrap on the job's generated history and
// registers the model as the next version of job.Name.
func RegisterBootstrap(ctx context.Context, ch driver.Conn, reg *registry.Registry, job BootstrapJob, logger *slog.Logger) (registry.Entry, Report, error) {
	end := time.Now().UTC().Truncate(time.Hour)
	hopts := HistoryOptions{Days: job.Days, Start: end.AddDate(0, 0, -job.Days)}
	if job.LoadHistory {
		if err := insertHistory(ctx, ch, GenerateHistory(hopts), logger); err != nil {
			return registry.Entry{}, Report{}, err
		}
	}
	existing, err := reg.List(ctx, job.Name)
	if err != nil {
		return registry.Entry{}, Report{}, err
	}
	version := fmt.Sprintf("v%d", len(existing)+1)
	ens, rep, err := Bootstrap(ctx, BootstrapOptions{Version: version, History: hopts, Logger: logger})
	if err != nil {
		return registry.Entry{}, Report{}, err
	}
	ens.Meta.Name = job.Name
	artifact, err := ens.MarshalONNX()
	if err != nil {
		return registry.Entry{}, Report{}, err
	}
	params, _ := json.Marshal(ens.Meta.Params)
	e, err := reg.Register(ctx, registry.Entry{
		Name:       job.Name,
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
		Status:            job.Status,
	}, artifact)
	if err != nil {
		return registry.Entry{}, Report{}, fmt.Errorf("register model: %w", err)
	}
	return e, rep, nil
}

// insertHistory writes a generated history into ClickHouse demand_minute.
func insertHistory(ctx context.Context, ch driver.Conn, hist []RegionHistory, logger *slog.Logger) error {
	h := analytics.NewHistory(ch, analytics.HistoryOptions{})
	for _, rh := range hist {
		if err := h.InsertDemandMinutes(ctx, rh.Region.ID, rh.Minutes); err != nil {
			return fmt.Errorf("load history of %s: %w", rh.Region.ID, err)
		}
	}
	logger.Info("generated history loaded into ClickHouse", "regions", len(hist))
	return nil
}
