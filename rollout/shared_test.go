package rollout

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/testenv"
)

// replica is a second serving process on the same registry: its own
// forecaster serving v1 and its own controller.
func replica(t *testing.T, e *env, store Store, opts Options) (*inference.Forecaster, *Controller) {
	t.Helper()
	ctx := ctxT(t)
	v1, err := e.reg.Get(ctx, "demand", "v1")
	if err != nil {
		t.Fatal(err)
	}
	data, err := e.reg.Load(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := inference.LoadModel(data, inference.RuntimeGo)
	if err != nil {
		t.Fatal(err)
	}
	m.Name, m.Version = v1.Name, v1.Version
	fc := inference.NewForecaster(nil, nil, inference.ForecasterOptions{Timeout: 20 * time.Millisecond})
	fc.SetModel(m)
	opts.Store = store
	return fc, New(e.reg, fc, opts)
}

// waitFor polls cond until it holds (30 s at most, for a busy machine).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRolloutSharedBetweenReplicas: a rollout started on one replica is
// served at the same share by the other, phases end once for both, the
// promotion reaches both, and an admin's rollback on either one takes the
// candidate out of both.
func TestRolloutSharedBetweenReplicas(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr})
	t.Cleanup(func() { rdb.Close() })
	store := NewRedisStore(rdb, "demand")
	opts := Options{
		Runtime:       inference.RuntimeGo,
		Phases:        []Phase{{10, 300 * time.Millisecond}, {50, 300 * time.Millisecond}, {100, 300 * time.Millisecond}},
		CheckInterval: 20 * time.Millisecond,
		MinSamples:    20,
		LatencySlack:  time.Second,
	}
	fcA, a := replica(t, e, store, opts)
	fcB, b := replica(t, e, store, opts)
	runController(t, a)
	runController(t, b)
	ctx := ctxT(t)

	if _, err := a.Start(ctx, "v2", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica B serves v2 at 10 %", func() bool {
		m, pct, _ := fcB.Candidate()
		return m != nil && m.Version == "v2" && pct == 10
	})
	if _, err := b.Start(ctx, "v2", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("second start on the other replica: %v, want ErrConflict", err)
	}
	// Both replicas serve traffic; the phases advance once, for both.
	waitFor(t, "promotion on both replicas", func() bool {
		traffic(ctx, fcA)
		traffic(ctx, fcB)
		sa, _ := a.Status()
		sb, _ := b.Status()
		return sa.State == StatePromoted && sb.State == StatePromoted
	})
	sa, _ := a.Status()
	sb, _ := b.Status()
	if len(sa.History) != 3 || len(sb.History) != 3 || !sa.History[2].StartedAt.Equal(sb.History[2].StartedAt) {
		t.Fatalf("phase histories differ or repeat:\nA %+v\nB %+v", sa.History, sb.History)
	}
	for name, fc := range map[string]*inference.Forecaster{"A": fcA, "B": fcB} {
		if m := fc.Model(); m == nil || m.Version != "v2" {
			t.Fatalf("replica %s serves %v after the promotion", name, m)
		}
		if m, _, _ := fc.Candidate(); m != nil {
			t.Fatalf("replica %s still has candidate %s", name, m.Version)
		}
	}

	// The next rollout (v1 back as candidate) is rolled back on B by an
	// admin: A stops serving it too.
	if _, err := a.Start(ctx, "v1", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica B serves v1 as candidate", func() bool {
		m, _, _ := fcB.Candidate()
		return m != nil && m.Version == "v1"
	})
	if st, err := b.Rollback(ctx, "bad numbers"); err != nil || st.State != StateRolledBack {
		t.Fatalf("rollback on B: %+v %v", st, err)
	}
	waitFor(t, "replica A drops the candidate", func() bool {
		m, _, _ := fcA.Candidate()
		st, _ := a.Status()
		return m == nil && st.State == StateRolledBack && st.Reason == "bad numbers"
	})
	if m := fcA.Model(); m.Version != "v2" {
		t.Fatalf("replica A serves %s after the rollback, want v2", m.Version)
	}
}

// TestRedisStoreSwap: a swap against a stale generation is refused.
func TestRedisStoreSwap(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr})
	t.Cleanup(func() { rdb.Close() })
	s := NewRedisStore(rdb, "m")
	ctx := ctxT(t)
	if _, _, ok, err := s.Load(ctx); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	for i, tt := range []struct {
		gen  uint64
		want bool
	}{{0, true}, {0, false}, {1, true}, {1, false}, {5, false}, {2, true}} {
		ok, err := s.Swap(ctx, tt.gen, Status{Candidate: "v2", Phase: i})
		if err != nil || ok != tt.want {
			t.Fatalf("swap %d at gen %d: %v %v, want %v", i, tt.gen, ok, err, tt.want)
		}
	}
	st, gen, ok, err := s.Load(ctx)
	if err != nil || !ok || gen != 3 || st.Phase != 5 || st.Candidate != "v2" {
		t.Fatalf("load: %+v gen %d ok %v err %v", st, gen, ok, err)
	}
}
