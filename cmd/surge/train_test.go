package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/training"
)

// trainDB is a migrated database on the shared test ClickHouse, with days
// of generated history for two regions ending at the current hour when
// days > 0.
func trainDB(t *testing.T, days int) (args []string, reg *registry.Registry) {
	t.Helper()
	return trainDBUntil(t, days, time.Now().UTC().Truncate(time.Hour))
}

// trainDBUntil is trainDB with history ending at end.
func trainDBUntil(t *testing.T, days int, end time.Time) (args []string, reg *registry.Registry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, addr, db := chtest.Migrated(t)
	if days > 0 {
		h := analytics.NewHistory(conn, analytics.HistoryOptions{})
		for _, rh := range training.GenerateHistory(training.HistoryOptions{Days: days, Start: end.AddDate(0, 0, -days),
			Regions: training.DefaultRegions[:2]}) {
			if err := h.InsertDemandMinutes(ctx, rh.Region.ID, rh.Minutes); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	store, err := registry.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--clickhouse-addr", addr, "--clickhouse-database", db, "--model-dir", dir}, registry.New(conn, store)
}

func TestTrainCommandFromClickHouse(t *testing.T) {
	// A fixed period: the generated history is seeded, so the gate's
	// figures do not depend on the hour the test runs at (ending at the
	// current hour, the 60-minute model missed the historical average by
	// 0.0036 WAPE at 15:00 UTC on 2026-12-04).
	end := time.Date(2026, 12, 4, 13, 0, 0, 0, time.UTC)
	args, reg := trainDBUntil(t, 22, end)
	// 22 days: too few daily rows after the 8 days of memory to train the
	// daily horizon; the real-data benchmark trains it.
	out, err := run(t, newTrainCmd(), append(args, "--horizons", "5,15,60", "--to", end.Format(time.RFC3339), "--window", "22d")...)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	t.Log("\n" + out)
	// So short a history backtests v1 and v2 (two folds each) and keeps
	// the one with the lower mean WAPE.
	for _, s := range []string{"6/6 gate and intervals", "demand v1 (candidate): schema v", "(backtest mean WAPE v2 0.", ", v1 0.", "regions berlin,paris", "15 min", "seasonal naive",
		"hist. average", "80% interval 60 min", "gate: PASSED", "berlin"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
	e, err := reg.Get(t.Context(), "demand", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != registry.StatusCandidate || e.Metrics["interval_q90_h15"] <= 1 || e.Metrics["gate_passed"] != 1 {
		t.Fatalf("registered %s with metrics %v", e.Status, e.Metrics)
	}

	// The same data with an unreachable MAPE threshold: recorded as rejected, exit error.
	out, err = run(t, newTrainCmd(), append(args, "--mape-threshold", "0.001", "--folds", "-1", "--objective", "poisson")...)
	if !errors.Is(err, errRejected) || !strings.Contains(out, "gate: REJECTED") || !strings.Contains(out, "above the threshold 0.10 %") {
		t.Fatalf("train with threshold 0.1 %%: err %v\n%s", err, out)
	}
	e, err = reg.Get(t.Context(), "demand", "v2")
	if err != nil || e.Status != registry.StatusRejected {
		t.Fatalf("v2 = %s, %v; want rejected", e.Status, err)
	}
}

func TestTrainCommandBadInput(t *testing.T) {
	args, _ := trainDB(t, 0)
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"no data", nil, []string{"no rows for any region", "surge replay", "surge simulate --history", "--source synthetic"}},
		{"no data in named regions", []string{"--regions", "berlin", "--window", "7d"}, []string{"regions berlin", "(7.0 days)"}},
		{"no data in the range", []string{"--from", "2001-01-01", "--to", "2001-02-01"},
			[]string{"no rows for any region between 2001-01-01T00:00:00Z and 2001-02-01T00:00:00Z (31.0 days)"}},
		{"range backwards", []string{"--from", "2001-02-01", "--to", "2001-01-01"},
			[]string{"--from 2001-02-01T00:00:00Z is not before --to 2001-01-01T00:00:00Z"}},
		{"bad from", []string{"--from", "January"}, []string{`--from "January": want an RFC 3339 time`}},
		{"bad to", []string{"--to", "2001-13-01"}, []string{`--to "2001-13-01"`}},
		{"bad window", []string{"--window", "a week"}, []string{`--window "a week"`}},
		{"bad per-horizon threshold", []string{"--mape-thresholds", "5=0.6,15"}, []string{`--mape-thresholds "5=0.6,15"`, `bad entry "15"`}},
		{"bad objective", []string{"--objective", "huber"}, []string{`--objective "huber"`}},
		{"bad threshold", []string{"--mape-threshold", "-1"}, []string{"--mape-threshold -1"}},
		{"bad source", []string{"--source", "csv"}, []string{`unknown --source "csv"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, newTrainCmd(), append(args, tc.flags...)...)
			if err == nil {
				t.Fatal("train succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

// A history from another period trains as it is with --from and --to: the
// holdout is the range's last days, not the days before now.
func TestTrainCommandExplicitRange(t *testing.T) {
	end := time.Date(2001, 1, 16, 0, 0, 0, 0, time.UTC)
	args, reg := trainDBUntil(t, 22, end)

	// Too short a range for a week of history before the holdout: the
	// error names the range and what is missing.
	_, err := run(t, newTrainCmd(), append(args, "--from", "2001-01-06", "--to", "2001-01-16")...)
	if !errors.Is(err, training.ErrNoData) || !strings.Contains(err.Error(), "2001-01-06 00:00:00 .. 2001-01-16 00:00:00") ||
		!strings.Contains(err.Error(), "need at least") {
		t.Fatalf("short range: %v", err)
	}

	out, err := run(t, newTrainCmd(), append(args, "--from", "2000-12-26", "--to", "2001-01-16T00:00:00Z",
		"--mape-thresholds", "5=0.5", "--horizons", "5,15,60", "--schema", "v2")...)
	if err != nil {
		t.Fatalf("train --from --to: %v\n%s", err, out)
	}
	if !strings.Contains(out, "gate: PASSED") {
		t.Fatalf("output:\n%s", out)
	}
	e, err := reg.Get(t.Context(), "demand", "v1")
	if err != nil {
		t.Fatal(err)
	}
	var params map[string]any
	if err := json.Unmarshal(e.Params, &params); err != nil {
		t.Fatal(err)
	}
	if e.Status != registry.StatusCandidate || params["data_from"] != "2000-12-26T00:00:00Z" ||
		params["data_to"] != "2001-01-16T00:00:00Z" || params["mape_threshold_h5"] != "0.5" || params["mape_min_actual"] != "5" || params["data"] != "real" || params["schema"] != "v2" {
		t.Fatalf("registered %s with params %v", e.Status, params)
	}
}
