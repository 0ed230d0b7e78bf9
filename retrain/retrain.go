// Package retrain owns the scheduled retrain's policy: which history range
// to train on, whether there is enough real history to train at all, and
// rolling a model that passed the gate out through the canary. The training
// itself (training.RunPipeline) and the rollout (rollout.Controller) are
// injected.
package retrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/training"
)

// ErrNotEnoughHistory is returned when the range holds less real history
// than Options.MinRealDays; the retrain is skipped.
var ErrNotEnoughHistory = errors.New("retrain: not enough real history")

// TrainFunc trains over [from, to) of ClickHouse demand history and records
// the model (candidate or rejected).
type TrainFunc func(ctx context.Context, from, to time.Time) (registry.Entry, *training.PipelineResult, error)

// StartFunc starts a canary rollout of a candidate version
// (rollout.Controller.Start, not in shadow mode).
type StartFunc func(ctx context.Context, version string) error

// Options configures a Job. A zero field takes the documented default.
type Options struct {
	// Window is how far back from To (or now) the history reaches; default
	// 28 days. Ignored with From.
	Window time.Duration
	// From and To fix the range (To exclusive; zero To: now), e.g. for a
	// deployment whose history was replayed from another period.
	From, To time.Time
	// MinRealDays is the real history (events received through the intake,
	// not the generated bootstrap history) the range must hold, first to
	// last event; default 14.
	MinRealDays float64
	// NoRollout leaves a model that passed the gate as a candidate instead
	// of starting its canary.
	NoRollout bool
	Logger    *slog.Logger // default slog.Default()
}

// Job is the retrain the schedule runs.
type Job struct {
	ch      driver.Conn
	train   TrainFunc
	rollout StartFunc // nil: no rollout
	opts    Options
}

// New returns a job. rollout may be nil.
func New(ch driver.Conn, train TrainFunc, rollout StartFunc, opts Options) *Job {
	if opts.Window <= 0 {
		opts.Window = training.DefaultWindow
	}
	if opts.MinRealDays <= 0 {
		opts.MinRealDays = 14
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Job{ch: ch, train: train, rollout: rollout, opts: opts}
}

// Range is the history range a run trains on: the configured one, starting
// no earlier than the first real event in it.
func (j *Job) Range(ctx context.Context, now time.Time) (from, to time.Time, realDays float64, err error) {
	to = j.opts.To
	if to.IsZero() {
		to = now.UTC().Truncate(time.Minute)
	}
	from = j.opts.From
	if from.IsZero() {
		from = to.Add(-j.opts.Window)
	}
	first, last, err := RealHistory(ctx, j.ch, from, to)
	if err != nil {
		return from, to, 0, err
	}
	if first.IsZero() {
		return from, to, 0, nil
	}
	if j.opts.To.IsZero() {
		// Up to the last minute with events, not to now: the sink may not
		// have written the last seconds yet, and they would read as zeros.
		to = last.Truncate(time.Minute).Add(time.Minute)
	}
	return first.Truncate(time.Minute), to, last.Sub(first).Hours() / 24, nil
}

// Run trains when the range holds MinRealDays of real history and starts
// the canary of a model that passed the gate.
func (j *Job) Run(ctx context.Context) error {
	from, to, days, err := j.Range(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("retrain: %w", err)
	}
	if days < j.opts.MinRealDays {
		return fmt.Errorf("%w: %.1f days of events in %s .. %s, need %.0f (the bootstrap model keeps serving)",
			ErrNotEnoughHistory, days, from.Format(time.DateTime), to.Format(time.DateTime), j.opts.MinRealDays)
	}
	e, res, err := j.train(ctx, from, to)
	if err != nil {
		return fmt.Errorf("retrain over %s .. %s: %w", from.Format(time.DateTime), to.Format(time.DateTime), err)
	}
	j.opts.Logger.Info("retrain finished", "version", e.Version, "status", e.Status, "gate_passed", res.Passed,
		"reasons", res.Reasons, "from", from, "to", to)
	if !res.Passed || j.opts.NoRollout || j.rollout == nil || e.Status != registry.StatusCandidate {
		return nil
	}
	if err := j.rollout(ctx, e.Version); err != nil {
		return fmt.Errorf("retrain: start the rollout of %s: %w", e.Version, err)
	}
	j.opts.Logger.Info("retrain: rollout started", "version", e.Version)
	return nil
}

// RealHistory returns the first and last event time in [from, to) of the
// events received through the intake (ClickHouse events_raw, backfills
// excluded); zero times when there are none. The generated bootstrap
// history is written into demand_minute directly and never counts.
func RealHistory(ctx context.Context, ch driver.Conn, from, to time.Time) (first, last time.Time, err error) {
	var n uint64
	row := ch.QueryRow(ctx, `SELECT count(), min(event_time), max(event_time) FROM events_raw
		WHERE backfill = 0 AND event_time >= ? AND event_time < ?`, from.UTC(), to.UTC())
	if err := row.Scan(&n, &first, &last); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("real history: %w", err)
	}
	if n == 0 {
		return time.Time{}, time.Time{}, nil
	}
	return first.UTC(), last.UTC(), nil
}

// Eager runs the retrain every Every (default 1 hour) while the served model
// was trained on generated data, so a deployment leaves the bootstrap model
// as soon as its real history suffices rather than at the next scheduled
// retrain. RunOnce is the schedule's (schedule.Scheduler.RunOnce: one
// replica at a time).
type Eager struct {
	Every     time.Duration
	Generated func() bool
	RunOnce   func(ctx context.Context) (ran bool, err error)
	Logger    *slog.Logger
}

// Run checks until ctx ends.
func (e *Eager) Run(ctx context.Context) error {
	every := e.Every
	if every <= 0 {
		every = time.Hour
	}
	logger := e.Logger
	if logger == nil {
		logger = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !e.Generated() {
			continue
		}
		if _, err := e.RunOnce(ctx); err != nil && ctx.Err() == nil {
			logger.Info("retrain on real history not done yet", "err", err)
		}
	}
}
