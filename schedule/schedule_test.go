package schedule

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func setup(t *testing.T) (context.Context, redis.UniversalClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	return ctx, rdb
}

func newSched(t *testing.T, o Options) *Scheduler {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	train := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name string
		o    Options
		err  string
	}{
		{"no redis", Options{Train: train}, "Redis and Train are required"},
		{"no train", Options{Redis: rdb}, "Redis and Train are required"},
		{"bad spec", Options{Redis: rdb, Train: train, Spec: "0 2 * *"}, `cron expression "0 2 * *"`},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
		}
	}
	s := newSched(t, Options{Redis: rdb, Train: train})
	wed := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	if got, want := s.Next(wed), time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("default schedule: next after %v = %v, want Sunday 02:00 UTC %v", wed, got, want)
	}
	if s.opts.LockKey != "lock:training" || s.opts.LockTTL != 10*time.Minute || s.opts.Owner == "" {
		t.Fatalf("defaults: %+v", s.opts)
	}
}

// Two schedulers race for the same run: one trains, the other skips.
func TestTwoSchedulersRace(t *testing.T) {
	ctx, rdb := setup(t)
	var calls atomic.Int32
	release := make(chan struct{})
	train := func(ctx context.Context) error {
		calls.Add(1)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := newSched(t, Options{Redis: rdb, Train: train, Owner: "a", Registerer: regA})
	b := newSched(t, Options{Redis: rdb, Train: train, Owner: "b", Registerer: regB})
	type result struct {
		s   *Scheduler
		ran bool
		err error
	}
	results := make(chan result, 2)
	for _, s := range []*Scheduler{a, b} {
		go func() {
			ran, err := s.RunOnce(ctx)
			results <- result{s, ran, err}
		}()
	}
	// The winner blocks in train until release, so the first result is the loser's.
	first := <-results
	if first.ran || !errors.Is(first.err, ErrLocked) {
		t.Fatalf("first result: ran %v err %v, want a skip with ErrLocked", first.ran, first.err)
	}
	close(release)
	second := <-results
	if !second.ran || second.err != nil || second.s == first.s {
		t.Fatalf("second result: ran %v err %v, want the other scheduler's run", second.ran, second.err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("train ran %d times, want 1", n)
	}
	if n, err := rdb.Exists(ctx, "lock:training").Result(); err != nil || n != 0 {
		t.Fatalf("lock after the run: exists %d, %v; want released", n, err)
	}
	loser, winner := first.s.m, second.s.m
	if testutil.ToFloat64(loser.runs.WithLabelValues("skipped")) != 1 || testutil.ToFloat64(winner.runs.WithLabelValues("ok")) != 1 ||
		testutil.ToFloat64(winner.last) == 0 {
		t.Fatal("metrics do not show one skip and one successful run")
	}
	// The lock is free again: the loser runs now.
	if ran, err := first.s.RunOnce(ctx); !ran || err != nil {
		t.Fatalf("run after release: %v, %v", ran, err)
	}
}

// A scheduler that crashed holding the lock blocks runs only until the lock
// expires.
func TestLockExpiresAfterCrash(t *testing.T) {
	ctx, rdb := setup(t)
	crashed := newSched(t, Options{Redis: rdb, Train: func(context.Context) error { return nil }, Owner: "crashed", LockTTL: 300 * time.Millisecond})
	if ok, err := crashed.acquire(ctx); !ok || err != nil {
		t.Fatalf("acquire: %v, %v", ok, err)
	}
	// ... and the process dies: no renewal, no release.
	var ran atomic.Bool
	next := newSched(t, Options{Redis: rdb, Train: func(context.Context) error { ran.Store(true); return nil }, Owner: "next"})
	if ok, err := next.RunOnce(ctx); ok || !errors.Is(err, ErrLocked) {
		t.Fatalf("run while the crashed lock lives: %v, %v; want ErrLocked", ok, err)
	}
	for {
		n, err := rdb.Exists(ctx, "lock:training").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the crashed owner's lock never expired")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if ok, err := next.RunOnce(ctx); !ok || err != nil || !ran.Load() {
		t.Fatalf("run after expiry: %v, %v, trained %v", ok, err, ran.Load())
	}
}

// A training longer than the TTL keeps its lock by renewing it.
func TestLockRenewedWhileTraining(t *testing.T) {
	ctx, rdb := setup(t)
	const ttl = 300 * time.Millisecond
	var checks int
	train := func(ctx context.Context) error {
		start := time.Now()
		for time.Since(start) < 4*ttl {
			owner, err := rdb.Get(ctx, "lock:training").Result()
			if err != nil || owner != "long" {
				return errors.New("lock not held while training: " + owner + " " + errString(err))
			}
			checks++
			time.Sleep(25 * time.Millisecond)
		}
		return nil
	}
	s := newSched(t, Options{Redis: rdb, Train: train, Owner: "long", LockTTL: ttl})
	if ok, err := s.RunOnce(ctx); !ok || err != nil {
		t.Fatalf("RunOnce: %v, %v", ok, err)
	}
	if checks == 0 {
		t.Fatal("train never checked the lock")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A lock taken over by another owner is detected by the renewal (the
// training is cancelled with ErrLockLost) and not deleted by the release.
func TestLockLostIsNotReleased(t *testing.T) {
	ctx, rdb := setup(t)
	train := func(tctx context.Context) error {
		if err := rdb.Set(ctx, "lock:training", "intruder", time.Minute).Err(); err != nil {
			return err
		}
		<-tctx.Done()
		return tctx.Err()
	}
	s := newSched(t, Options{Redis: rdb, Train: train, Owner: "me", LockTTL: 300 * time.Millisecond})
	ran, err := s.RunOnce(ctx)
	if !ran || !errors.Is(err, ErrLockLost) {
		t.Fatalf("RunOnce: %v, %v; want ErrLockLost", ran, err)
	}
	if owner, err := rdb.Get(ctx, "lock:training").Result(); err != nil || owner != "intruder" {
		t.Fatalf("lock after release: %q, %v; want the intruder's lock kept", owner, err)
	}
}

// Run triggers the training on its schedule and stops with its context.
func TestRunTriggersOnSchedule(t *testing.T) {
	ctx, rdb := setup(t)
	runCtx, stop := context.WithCancel(ctx)
	var calls atomic.Int32
	s := newSched(t, Options{Redis: rdb, Spec: "@every 1s", Owner: "cron", Train: func(context.Context) error {
		calls.Add(1)
		stop()
		return nil
	}})
	if err := s.Run(runCtx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil || calls.Load() != 1 {
		t.Fatalf("calls %d, test ctx %v: want one scheduled training", calls.Load(), ctx.Err())
	}
}
