package retrain_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/retrain"
	"github.com/surgeworks/surge/training"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The retrain waits for enough real history (events through the intake, not
// backfills), trains from the first real event to the last, and starts the
// canary only of a model that passed the gate.
func TestJob(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := chtest.Migrated(t)
	now := time.Now().UTC().Truncate(time.Minute)
	insert := func(at time.Time, backfill uint8) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO events_raw (event_id, type, region_id, event_time, received_at, backfill)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(at.String(), "search", "berlin", at, now, backfill); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	first := now.Add(-20 * 24 * time.Hour).Add(90 * time.Second)
	insert(first.Add(-5*24*time.Hour), 1) // a backfill: not real history
	insert(first, 0)

	var trained [][2]time.Time
	passed := false
	train := func(_ context.Context, from, to time.Time) (registry.Entry, *training.PipelineResult, error) {
		trained = append(trained, [2]time.Time{from, to})
		status := registry.StatusRejected
		if passed {
			status = registry.StatusCandidate
		}
		return registry.Entry{Version: "v2", Status: status}, &training.PipelineResult{Passed: passed}, nil
	}
	var started []string
	start := func(_ context.Context, v string) error { started = append(started, v); return nil }
	job := retrain.New(conn, train, start, retrain.Options{MinRealDays: 14})

	// One event: no days of history.
	if err := job.Run(ctx); !errors.Is(err, retrain.ErrNotEnoughHistory) || len(trained) != 0 {
		t.Fatalf("one event: err %v, trained %v", err, trained)
	}
	last := now.Add(-2 * time.Hour).Add(30 * time.Second)
	insert(last, 0)
	if err := job.Run(ctx); err != nil {
		t.Fatal(err)
	}
	want := [2]time.Time{first.Truncate(time.Minute), last.Truncate(time.Minute).Add(time.Minute)}
	if len(trained) != 1 || !trained[0][0].Equal(want[0]) || !trained[0][1].Equal(want[1]) || len(started) != 0 {
		t.Fatalf("rejected model: trained %v (want %v), started %v", trained, want, started)
	}
	passed = true
	if err := job.Run(ctx); err != nil || len(started) != 1 || started[0] != "v2" {
		t.Fatalf("passed model: err %v, started %v", err, started)
	}
	// A fixed range outside the events has no real history.
	fixed := retrain.New(conn, train, start, retrain.Options{From: now.AddDate(-1, 0, 0), To: now.AddDate(0, -6, 0)})
	if err := fixed.Run(ctx); !errors.Is(err, retrain.ErrNotEnoughHistory) {
		t.Fatalf("empty fixed range: %v", err)
	}
}
