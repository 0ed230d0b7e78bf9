package rollout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/internal/chtest"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/model"
	"github.com/surgeworks/surge/registry"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Stable models predict stableDemand, candidates candidateDemand: the
// demand of a forecast tells which version computed it, besides its
// ModelVersion.
const (
	stableDemand    = 10
	candidateDemand = 20
)

type env struct {
	reg   *registry.Registry
	store *registry.LocalStore
	fc    *inference.Forecaster
	dir   string
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// artifact is a real ONNX model of the serving schema that predicts base.
func artifact(t *testing.T, base float32) []byte {
	t.Helper()
	e := &model.Ensemble{NumFeatures: features.V1.Len(), Base: base,
		Meta: model.Metadata{Name: "demand", SchemaHash: features.V1.Hash(), FeatureNames: features.V1.Names()}}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newEnv registers v1 (active, served) and v2 (candidate) in a real
// registry on ClickHouse, and serves v1 from a forecaster.
func newEnv(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	ctx := ctxT(t)
	conn, _, _ := chtest.Migrated(t)
	dir := t.TempDir()
	store, err := registry.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{reg: registry.New(conn, store), store: store, dir: dir}
	v1, err := e.reg.Register(ctx, registry.Entry{Name: "demand", SchemaHash: features.V1.Hash(), Status: registry.StatusActive}, artifact(t, stableDemand))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Register(ctx, registry.Entry{Name: "demand", SchemaHash: features.V1.Hash()}, artifact(t, candidateDemand)); err != nil {
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
	e.fc = inference.NewForecaster(nil, nil, inference.ForecasterOptions{Timeout: timeout})
	e.fc.SetModel(m)
	return e
}

// failingPredictor fails every call, or hangs until the timeout.
type failingPredictor struct{ hang bool }

// slowPredictor answers like the candidate, after a delay.
type slowPredictor struct{ delay time.Duration }

func (p slowPredictor) Predict(_ context.Context, rows [][]float32) ([]float32, error) {
	time.Sleep(p.delay)
	out := make([]float32, len(rows))
	for i := range out {
		out[i] = candidateDemand
	}
	return out, nil
}

func (slowPredictor) Close() error { return nil }

func (p failingPredictor) Predict(ctx context.Context, _ [][]float32) ([]float32, error) {
	if p.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("candidate runtime exploded")
}

func (failingPredictor) Close() error { return nil }

// loadWith loads artifacts on the Go runtime and gives candidates (the
// models predicting candidateDemand) the predictor p when p is not nil.
func loadWith(p inference.Predictor) func([]byte) (*inference.Model, error) {
	return func(data []byte) (*inference.Model, error) {
		m, err := inference.LoadModel(data, inference.RuntimeGo)
		if err == nil && p != nil && m.Ensemble.Base == candidateDemand {
			m.Predictor = p
		}
		return m, err
	}
}

// fakeAccuracy knows the MAPE of each version.
type fakeAccuracy map[string]float64

func (a fakeAccuracy) MAPE(_ context.Context, _, version string, _ time.Time) (float64, int, error) {
	v, ok := a[version]
	if !ok {
		return 0, 0, nil
	}
	return v, 1000, nil
}

var regions = func() []string {
	var out []string
	for i := range 200 {
		out = append(out, fmt.Sprintf("region-%03d", i))
	}
	return out
}()

// traffic asks for a forecast of every region.
func traffic(ctx context.Context, fc *inference.Forecaster) []inference.Forecast {
	now := time.Now()
	reqs := make([]inference.Request, len(regions))
	for i, r := range regions {
		reqs[i] = inference.Request{RegionID: r, HorizonMinutes: 15, At: now,
			Features: features.Values{Online: features.Online{features.Searches1m: 10}, UpdatedAt: now}}
	}
	return fc.ForecastBatch(ctx, reqs)
}

// runController runs c until the test ends.
func runController(t *testing.T, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// driveUntilDone sends traffic until the rollout is no longer running,
// checking every answer: each region is served by the version its bucket
// says, and never by a fallback. It fails the test after 30 s.
func driveUntilDone(t *testing.T, e *env, c *Controller) Status {
	t.Helper()
	ctx := ctxT(t)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		candBefore, pctBefore, shadow := e.fc.Candidate()
		out := traffic(ctx, e.fc)
		candAfter, pctAfter, _ := e.fc.Candidate()
		for i, fc := range out {
			if fc.Source != inference.SourceModel {
				t.Fatalf("region %s served by %s: %v", fc.RegionID, fc.Source, fc.Warnings)
			}
			if want := map[string]float64{"v1": stableDemand, "v2": candidateDemand}[fc.ModelVersion]; fc.Demand != want {
				t.Fatalf("region %s: version %s gave %v, want %v", fc.RegionID, fc.ModelVersion, fc.Demand, want)
			}
			if candBefore == nil || candBefore != candAfter || pctBefore != pctAfter {
				continue // the split changed during the batch
			}
			want := "v1"
			bucket := inference.CanaryBucket(regions[i], fc.HorizonMinutes, fc.GeneratedAt)
			if !shadow && bucket < pctBefore {
				want = candBefore.Version
			}
			if fc.ModelVersion != want && candBefore.Version == "v2" {
				// A failing candidate's share falls back to stable.
				if _, isFailing := candBefore.Predictor.(failingPredictor); !isFailing || fc.ModelVersion != "v1" {
					t.Fatalf("region %s (bucket %d) at %d%%: served by %s, want %s", regions[i], bucket, pctBefore, fc.ModelVersion, want)
				}
			}
		}
		if s, _ := c.Status(); s.State != StateRunning {
			return s
		}
		time.Sleep(2 * time.Millisecond)
	}
	s, _ := c.Status()
	t.Fatalf("rollout still running after 30 s: %+v", s)
	return s
}

func statusHistory(t *testing.T, e *env, version string) []registry.Status {
	t.Helper()
	h, err := e.reg.StatusHistory(ctxT(t), "demand", version)
	if err != nil {
		t.Fatal(err)
	}
	var out []registry.Status
	for _, c := range h {
		out = append(out, c.Status)
	}
	return out
}

func TestRolloutPromotesThroughPhases(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	reg := prometheus.NewRegistry()
	c := New(e.reg, e.fc, Options{
		Runtime:       inference.RuntimeGo,
		Phases:        []Phase{{10, 300 * time.Millisecond}, {50, 300 * time.Millisecond}, {100, 300 * time.Millisecond}},
		CheckInterval: 20 * time.Millisecond,
		MinSamples:    20,
		LatencySlack:  time.Second, // latency is not under test here
		// The candidate is as accurate as the stable version: no rollback.
		Accuracy:   fakeAccuracy{"v1": 0.10, "v2": 0.105},
		Registerer: reg,
	})
	st, err := c.Start(ctxT(t), "v2", false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != 1 || st.Percent != 10 || st.Candidate != "v2" || st.Stable != "v1" || st.PhaseEndsAt.IsZero() {
		t.Fatalf("started: %+v", st)
	}
	if got := testutil.ToFloat64(c.m.percent); got != 10 {
		t.Fatalf("surge_rollout_percent = %v, want 10", got)
	}
	runController(t, c)
	st = driveUntilDone(t, e, c)

	if st.State != StatePromoted {
		t.Fatalf("rollout ended %s (%s), want promoted", st.State, st.Reason)
	}
	var percents []int
	for _, p := range st.History {
		percents = append(percents, p.Percent)
	}
	if !slices.Equal(percents, []int{10, 50, 100}) {
		t.Fatalf("phases %v, want [10 50 100]", percents)
	}
	if st.CandidateStats.Requests == 0 || st.StableStats.Requests == 0 || st.CandidateStats.MAPESamples == 0 {
		t.Fatalf("no comparison recorded: %+v / %+v", st.CandidateStats, st.StableStats)
	}
	if m := e.fc.Model(); m == nil || m.Version != "v2" {
		t.Fatalf("served model after promotion: %+v", m)
	}
	if m, _, _ := e.fc.Candidate(); m != nil {
		t.Fatalf("candidate still set after promotion: %s", m.Version)
	}
	for _, fc := range traffic(ctxT(t), e.fc) {
		if fc.ModelVersion != "v2" || fc.Demand != candidateDemand {
			t.Fatalf("after promotion %s served by %s (%v)", fc.RegionID, fc.ModelVersion, fc.Demand)
		}
	}
	if h := statusHistory(t, e, "v2"); !slices.Equal(h, []registry.Status{registry.StatusCandidate, registry.StatusActive}) {
		t.Fatalf("v2 status history %v", h)
	}
	if h := statusHistory(t, e, "v1"); !slices.Equal(h, []registry.Status{registry.StatusActive, registry.StatusRetired}) {
		t.Fatalf("v1 status history %v", h)
	}
	if got := testutil.ToFloat64(c.m.phase); got != 0 {
		t.Fatalf("surge_rollout_phase after the rollout = %v, want 0", got)
	}
	if got := testutil.ToFloat64(c.m.finished.WithLabelValues("promoted")); got != 1 {
		t.Fatalf("promoted rollouts = %v", got)
	}
}

func TestRolloutRollsBackWorseCandidate(t *testing.T) {
	tests := []struct {
		name       string
		predictor  inference.Predictor
		accuracy   AccuracySource
		wantReason string
	}{
		{"failing candidate", failingPredictor{}, nil, "error rate"},
		{"hanging candidate", failingPredictor{hang: true}, nil, "error rate"},
		// Within the (generous) timeout, but far slower than the stable
		// version plus the 5 ms slack (the stable one answers in
		// microseconds; a busy machine would need a 45 ms stall at its p99).
		{"slow candidate", slowPredictor{delay: 50 * time.Millisecond}, nil, "inference p99"},
		{"less accurate candidate", nil, fakeAccuracy{"v1": 0.10, "v2": 0.25}, "MAPE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout, slack := 20*time.Millisecond, time.Second // latency is not under test
			if _, slow := tt.predictor.(slowPredictor); slow {
				timeout, slack = 10*time.Second, 5*time.Millisecond
			}
			e := newEnv(t, timeout)
			c := New(e.reg, e.fc, Options{
				Phases:        []Phase{{50, time.Minute}, {100, time.Minute}},
				CheckInterval: 20 * time.Millisecond,
				MinSamples:    20,
				LatencySlack:  slack,
				Accuracy:      tt.accuracy,
				Load:          loadWith(tt.predictor),
			})
			if _, err := c.Start(ctxT(t), "v2", false); err != nil {
				t.Fatal(err)
			}
			runController(t, c)
			st := driveUntilDone(t, e, c)
			if st.State != StateRolledBack || !strings.Contains(st.Reason, tt.wantReason) {
				t.Fatalf("rollout ended %s with reason %q, want rolled back for %q", st.State, st.Reason, tt.wantReason)
			}
			if st.Phase != 1 {
				t.Fatalf("rolled back in phase %d, want 1", st.Phase)
			}
			if m, _, _ := e.fc.Candidate(); m != nil {
				t.Fatalf("candidate %s still set", m.Version)
			}
			for _, fc := range traffic(ctxT(t), e.fc) {
				if fc.ModelVersion != "v1" {
					t.Fatalf("after rollback %s served by %s", fc.RegionID, fc.ModelVersion)
				}
			}
			if h := statusHistory(t, e, "v2"); !slices.Equal(h, []registry.Status{registry.StatusCandidate, registry.StatusRejected}) {
				t.Fatalf("v2 status history %v", h)
			}
			if h := statusHistory(t, e, "v1"); !slices.Equal(h, []registry.Status{registry.StatusActive}) {
				t.Fatalf("v1 status history %v", h)
			}
		})
	}
}

func TestShadowRolloutNeverServesCandidate(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	c := New(e.reg, e.fc, Options{
		Runtime:       inference.RuntimeGo,
		Phases:        []Phase{{10, 100 * time.Millisecond}, {100, 100 * time.Millisecond}},
		CheckInterval: 10 * time.Millisecond,
		MinSamples:    5,
		LatencySlack:  time.Second,
	})
	if _, err := c.Start(ctxT(t), "v2", true); err != nil {
		t.Fatal(err)
	}
	runController(t, c)
	ctx := ctxT(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, fc := range traffic(ctx, e.fc) {
			if fc.ModelVersion != "v1" || fc.Demand != stableDemand {
				t.Fatalf("shadow rollout served %s from %s (%v)", fc.RegionID, fc.ModelVersion, fc.Demand)
			}
		}
		st, _ := c.Status()
		if st.State != StateRunning {
			t.Fatalf("shadow rollout ended on its own: %s (%s)", st.State, st.Reason)
		}
		// The last phase of a shadow rollout waits for an admin; the
		// candidate has been measured in it.
		if st.Phase == 2 && st.PhaseEndsAt.IsZero() && st.CandidateStats.Calls >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadow rollout did not reach its last phase with shadow calls: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := c.Promote(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(); st.State != StatePromoted {
		t.Fatalf("after Promote: %+v", st)
	}
	if m := e.fc.Model(); m.Version != "v2" {
		t.Fatalf("served %s after promotion", m.Version)
	}
}

func TestRolloutRefusals(t *testing.T) {
	e := newEnv(t, 20*time.Millisecond)
	ctx := ctxT(t)
	other, err := e.reg.Register(ctx, registry.Entry{Name: "demand", SchemaHash: "another-schema"}, artifact(t, 30))
	if err != nil {
		t.Fatal(err)
	}
	garbage, err := e.reg.Register(ctx, registry.Entry{Name: "demand", SchemaHash: features.V1.Hash()}, []byte("not an onnx model"))
	if err != nil {
		t.Fatal(err)
	}
	tampered, err := e.reg.Register(ctx, registry.Entry{Name: "demand", SchemaHash: features.V1.Hash()}, artifact(t, 40))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "demand", tampered.Version+".bin"), []byte("flipped bits"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := New(e.reg, e.fc, Options{Runtime: inference.RuntimeGo})

	tests := []struct {
		name    string
		version string
		want    error
	}{
		{"unknown version", "v99", registry.ErrNotFound},
		{"other schema hash", other.Version, ErrRefused},
		{"artifact that does not load", garbage.Version, ErrRefused},
		{"artifact with another checksum", tampered.Version, ErrRefused},
		{"the active version", "v1", ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Start(ctx, tt.version, false); !errors.Is(err, tt.want) {
				t.Fatalf("Start(%s) = %v, want %v", tt.version, err, tt.want)
			}
			if _, err := c.Promote(ctx, tt.version); tt.version != "v1" && !errors.Is(err, tt.want) {
				t.Fatalf("Promote(%s) = %v, want %v", tt.version, err, tt.want)
			}
			if m := e.fc.Model(); m.Version != "v1" {
				t.Fatalf("serving %s after a refusal", m.Version)
			}
			if m, _, _ := e.fc.Candidate(); m != nil {
				t.Fatalf("candidate %s set after a refusal", m.Version)
			}
		})
	}
	if _, ok := c.Status(); ok {
		t.Fatal("a refused rollout left a status")
	}
	if _, err := c.Rollback(ctx, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("Rollback without a rollout = %v, want ErrConflict", err)
	}
	if _, err := c.Start(ctx, "v2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, "v2", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("second Start = %v, want ErrConflict", err)
	}
	if _, err := c.Promote(ctx, other.Version); !errors.Is(err, ErrConflict) {
		t.Fatalf("Promote of another version during a rollout = %v, want ErrConflict", err)
	}
	st, err := c.Rollback(ctx, "looked wrong")
	if err != nil || st.State != StateRolledBack || st.Reason != "looked wrong" {
		t.Fatalf("Rollback = %+v, %v", st, err)
	}
	if h := statusHistory(t, e, "v2"); !slices.Equal(h, []registry.Status{registry.StatusCandidate, registry.StatusRejected}) {
		t.Fatalf("v2 status history %v", h)
	}
}
