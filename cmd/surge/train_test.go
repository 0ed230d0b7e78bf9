package main

import (
	"context"
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, addr, db := chtest.Migrated(t)
	if days > 0 {
		end := time.Now().UTC().Truncate(time.Hour)
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
	args, reg := trainDB(t, 15)
	out, err := run(t, newTrainCmd(), args...)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	t.Log("\n" + out)
	for _, s := range []string{"4/4 gate and intervals", "demand v1 (candidate)", "regions berlin,paris", "15 min", "seasonal naive",
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
		{"no data in named regions", []string{"--regions", "berlin", "--window", "7d"}, []string{"regions berlin", "window 168h0m0s"}},
		{"bad window", []string{"--window", "a week"}, []string{`--window "a week"`}},
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
