package inference

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

func canaryRequests(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = freshRequest(fmt.Sprintf("region-%04d", i))
	}
	return reqs
}

func TestBucketIsStableAndUniform(t *testing.T) {
	// Fixed values: a change of the hash would move regions between versions
	// across a deploy.
	at := time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)
	for key, want := range map[string]int{"berlin": 19, "paris": 66} {
		for range 3 {
			if got := CanaryBucket(key, 15, at); got != want {
				t.Fatalf("CanaryBucket(%q) = %d, want %d", key, got, want)
			}
		}
	}
	// The same second, the same bucket.
	if CanaryBucket("berlin", 15, at) != CanaryBucket("berlin", 15, at.Add(999*time.Millisecond)) {
		t.Fatal("the bucket changed within a second")
	}
	const n = 20000
	for _, pct := range []int{10, 50, 90} {
		below, belowTime := 0, 0
		for i := range n {
			if CanaryBucket(fmt.Sprintf("region-%05d", i), 15, at) < pct {
				below++
			}
			// Five regions over time: the share holds with few regions.
			if CanaryBucket([]string{"berlin", "paris", "london", "nyc", "sf"}[i%5], 15, at.Add(time.Duration(i/5)*time.Second)) < pct {
				belowTime++
			}
		}
		if got := 100 * float64(belowTime) / n; math.Abs(got-float64(pct)) > 1.5 {
			t.Errorf("%d%% split over five regions and %d seconds: %.2f%% below", pct, n/5, got)
		}
		if got := 100 * float64(below) / n; math.Abs(got-float64(pct)) > 1.5 {
			t.Errorf("%d%% split: %.2f%% of %d keys below", pct, got, n)
		}
	}
}

func TestCanarySplit(t *testing.T) {
	ctx := context.Background()
	stable, cand := &fakePredictor{value: 10}, &fakePredictor{value: 20}
	f := newTestForecaster(stable, nil)
	reqs := canaryRequests(2000)
	tests := []struct {
		percent int
	}{{0}, {10}, {50}, {100}}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d%%", tt.percent), func(t *testing.T) {
			f.SetCandidate(&Model{Name: "demand", Version: "v8", Predictor: cand}, tt.percent, false)
			first := f.ForecastBatch(ctx, reqs)
			toCandidate := 0
			for i, fc := range first {
				want, demand := "v7", 10.0
				if CanaryBucket(reqs[i].RegionID, reqs[i].HorizonMinutes, reqs[i].At) < tt.percent {
					want, demand = "v8", 20.0
					toCandidate++
				}
				if fc.ModelVersion != want || fc.Demand != demand || fc.Source != SourceModel {
					t.Fatalf("%s: %+v, want %s", reqs[i].RegionID, fc, want)
				}
			}
			if got := 100 * float64(toCandidate) / float64(len(reqs)); math.Abs(got-float64(tt.percent)) > 3 {
				t.Errorf("candidate served %.1f%% of the regions, want about %d%%", got, tt.percent)
			}
			// Same key, same version, call after call (and one at a time).
			for range 3 {
				for i, fc := range f.ForecastBatch(ctx, reqs) {
					if fc.ModelVersion != first[i].ModelVersion {
						t.Fatalf("%s moved from %s to %s", reqs[i].RegionID, first[i].ModelVersion, fc.ModelVersion)
					}
				}
			}
			for i := range 50 {
				if fc := f.Forecast(ctx, reqs[i]); fc.ModelVersion != first[i].ModelVersion {
					t.Fatalf("%s alone: %s, in a batch: %s", reqs[i].RegionID, fc.ModelVersion, first[i].ModelVersion)
				}
			}
		})
	}
	if m := f.ClearCandidate(); m == nil || m.Version != "v8" {
		t.Fatalf("ClearCandidate returned %+v", m)
	}
	for _, fc := range f.ForecastBatch(ctx, reqs) {
		if fc.ModelVersion != "v7" {
			t.Fatalf("after ClearCandidate %s served by %s", fc.RegionID, fc.ModelVersion)
		}
	}
}

func TestFailingCandidateFallsBackToStable(t *testing.T) {
	ctx := context.Background()
	stable, cand := &fakePredictor{value: 10}, &fakePredictor{value: 20}
	cand.fail.Store(true)
	f := newTestForecaster(stable, nil)
	f.SetCandidate(&Model{Name: "demand", Version: "v8", Predictor: cand}, 100, false)
	// More calls than the breaker's threshold: the candidate's breaker opens,
	// the stable one stays closed.
	for range 10 {
		for _, fc := range f.ForecastBatch(ctx, canaryRequests(20)) {
			if fc.ModelVersion != "v7" || fc.Source != SourceModel || fc.Degraded() {
				t.Fatalf("with a failing candidate: %+v", fc)
			}
		}
	}
	if f.BreakerState().String() != "closed" {
		t.Fatalf("stable breaker %s after candidate failures", f.BreakerState())
	}
	if got := cand.calls.Load(); got >= 10 {
		t.Fatalf("candidate called %d times: its breaker did not open", got)
	}
}

type recordingObserver struct{ ch chan Observation }

func (o recordingObserver) ObserveInference(ob Observation) { o.ch <- ob }

func TestShadowNeverServes(t *testing.T) {
	ctx := context.Background()
	stable, cand := &fakePredictor{value: 10}, &fakePredictor{value: 20}
	f := newTestForecaster(stable, nil)
	obs := recordingObserver{ch: make(chan Observation, 100)}
	f.SetObserver(obs)
	f.SetCandidate(&Model{Name: "demand", Version: "v8", Predictor: cand}, 100, true)
	for _, fc := range f.ForecastBatch(ctx, canaryRequests(50)) {
		if fc.ModelVersion != "v7" || fc.Demand != 10 {
			t.Fatalf("shadow mode served %+v", fc)
		}
	}
	// The stable call is reported at once; the shadow call in the background.
	seen := map[Role]Observation{}
	timeout := time.After(10 * time.Second)
	for len(seen) < 2 {
		select {
		case o := <-obs.ch:
			seen[o.Role] = o
		case <-timeout:
			t.Fatalf("observations %v: no shadow call", seen)
		}
	}
	if o := seen[RoleShadow]; o.Version != "v8" || o.Rows != 50 || o.Err != nil {
		t.Fatalf("shadow observation %+v", o)
	}
	if o := seen[RoleStable]; o.Version != "v7" || o.Rows != 50 {
		t.Fatalf("stable observation %+v", o)
	}
}
