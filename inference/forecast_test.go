package inference

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeworks/surge/features"
)

// fakePredictor answers every row with value, or fails, or hangs until released.
type fakePredictor struct {
	value float32
	fail  atomic.Bool
	hang  atomic.Bool
	calls atomic.Int64
}

func (p *fakePredictor) Predict(ctx context.Context, rows [][]float32) ([]float32, error) {
	p.calls.Add(1)
	if p.hang.Load() {
		<-ctx.Done() // a runtime that never returns on its own
		time.Sleep(time.Millisecond)
		return nil, ctx.Err()
	}
	if p.fail.Load() {
		return nil, errors.New("runtime exploded")
	}
	out := make([]float32, len(rows))
	for i := range out {
		out[i] = p.value
	}
	return out, nil
}

func (p *fakePredictor) Close() error { return nil }

type fakeHistory map[string]float64

func (h fakeHistory) Lookup(region string, _ time.Time) (float64, bool) {
	v, ok := h[region]
	return v, ok
}

var t0 = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)

func freshRequest(region string) Request {
	return Request{
		RegionID: region, HorizonMinutes: 15, At: t0,
		Features: features.Values{Online: features.Online{features.Searches1m: 10}, UpdatedAt: t0.Add(-5 * time.Second)},
	}
}

func newTestForecaster(p Predictor, h HistoryLookup) *Forecaster {
	f := NewForecaster(nil, h, ForecasterOptions{Timeout: 20 * time.Millisecond, OpenDelay: 150 * time.Millisecond})
	f.SetModel(&Model{Name: "demand", Version: "v7", Predictor: p})
	return f
}

func TestFallbackChain(t *testing.T) {
	ctx := context.Background()
	p := &fakePredictor{value: 42}
	f := newTestForecaster(p, fakeHistory{"berlin": 3})

	fc := f.Forecast(ctx, freshRequest("berlin"))
	if fc.Source != SourceModel || fc.Demand != 42 || fc.ModelVersion != "v7" || fc.Degraded() {
		t.Fatalf("model forecast = %+v", fc)
	}
	if !(fc.Lower < 42 && fc.Upper > 42) {
		t.Fatalf("interval [%v, %v] does not hold 42", fc.Lower, fc.Upper)
	}

	p.fail.Store(true)
	fc = f.Forecast(ctx, freshRequest("berlin"))
	if fc.Source != SourceCached || fc.Demand != 42 || !fc.Degraded() {
		t.Fatalf("after a model failure: %+v, want the cached 42", fc)
	}
	if len(fc.Warnings) != 1 || !strings.Contains(fc.Warnings[0], "cache") || !strings.Contains(fc.Warnings[0], "runtime exploded") {
		t.Fatalf("warnings %q do not name the source and the cause", fc.Warnings)
	}

	// Paris never had a model forecast: the historical average serves.
	fc = f.Forecast(ctx, freshRequest("paris"))
	if fc.Source != SourceStatic {
		t.Fatalf("paris without history = %+v, want STATIC", fc)
	}
	f2 := newTestForecaster(p, fakeHistory{"paris": 3})
	fc = f2.Forecast(ctx, freshRequest("paris"))
	if fc.Source != SourceHistoricalAverage || fc.Demand != 45 {
		t.Fatalf("paris with 3/min of history = %+v, want HISTORICAL_AVERAGE 45 over 15 min", fc)
	}
	if !strings.Contains(fc.Warnings[0], "historical average") {
		t.Fatalf("warning %q", fc.Warnings[0])
	}
}

func TestCachedForecastExpires(t *testing.T) {
	ctx := context.Background()
	p := &fakePredictor{value: 42}
	f := newTestForecaster(p, nil)
	f.Forecast(ctx, freshRequest("berlin"))
	p.fail.Store(true)
	late := freshRequest("berlin")
	late.At = t0.Add(31 * time.Minute)
	late.Features.UpdatedAt = late.At
	if fc := f.Forecast(ctx, late); fc.Source != SourceStatic {
		t.Fatalf("a 31-minute-old cached forecast served: %+v", fc)
	}
}

func TestModelSkippedWithoutFreshFeatures(t *testing.T) {
	ctx := context.Background()
	p := &fakePredictor{value: 42}
	f := newTestForecaster(p, fakeHistory{"berlin": 1})
	cases := map[string]Request{
		"missing": {RegionID: "berlin", HorizonMinutes: 15, At: t0},
		"stale": {RegionID: "berlin", HorizonMinutes: 15, At: t0,
			Features: features.Values{Online: features.Online{}, UpdatedAt: t0.Add(-6 * time.Minute)}},
		"redis down": {RegionID: "berlin", HorizonMinutes: 15, At: t0, FeaturesErr: errors.New("connection refused")},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			before := p.calls.Load()
			fc := f.Forecast(ctx, req)
			if fc.Source != SourceHistoricalAverage {
				t.Fatalf("source %s, want HISTORICAL_AVERAGE", fc.Source)
			}
			if p.calls.Load() != before {
				t.Fatal("the model ran on missing features")
			}
		})
	}
}

func TestCachedFromRedisWins(t *testing.T) {
	f := newTestForecaster(&fakePredictor{}, nil)
	f.SetModel(nil)
	req := freshRequest("berlin")
	req.Cached = &Forecast{RegionID: "berlin", HorizonMinutes: 15, Demand: 12, ModelVersion: "v6", Source: SourceModel, GeneratedAt: t0.Add(-time.Minute)}
	fc := f.Forecast(context.Background(), req)
	if fc.Source != SourceCached || fc.Demand != 12 || fc.ModelVersion != "v6" {
		t.Fatalf("%+v, want the Redis-cached forecast", fc)
	}
	if !strings.Contains(fc.Warnings[0], "no model loaded") {
		t.Fatalf("warning %q", fc.Warnings[0])
	}
}

// TestBreakerOnHangingInference makes inference hang: each call times out at
// the limit, five timeouts open the breaker, an open breaker answers without
// calling the model, and after the delay one successful trial closes it.
func TestBreakerOnHangingInference(t *testing.T) {
	ctx := context.Background()
	p := &fakePredictor{value: 42}
	f := newTestForecaster(p, nil)
	f.Forecast(ctx, freshRequest("berlin")) // a good forecast to fall back on
	p.hang.Store(true)

	for i := range 5 {
		if st := f.BreakerState(); st != circuitbreaker.ClosedState {
			t.Fatalf("breaker %s before failure %d, want closed", st, i+1)
		}
		fc := f.Forecast(ctx, freshRequest("berlin")) // an answer at all: the model never returns by itself
		if fc.Source != SourceCached || !strings.Contains(fc.Warnings[0], "timed out after 20ms") {
			t.Fatalf("call %d: %+v", i+1, fc)
		}
	}
	if st := f.BreakerState(); st != circuitbreaker.OpenState {
		t.Fatalf("breaker %s after 5 timeouts, want open", st)
	}
	calls := p.calls.Load()
	fc := f.Forecast(ctx, freshRequest("berlin"))
	if p.calls.Load() != calls {
		t.Fatal("an open breaker let a call through")
	}
	if fc.Source != SourceCached || !strings.Contains(fc.Warnings[0], "circuit breaker open") {
		t.Fatalf("with the breaker open: %+v", fc)
	}

	// After the delay the breaker lets one trial through; a failure re-opens it.
	// (failsafe-go moves to half-open when the next call asks for a permit.)
	time.Sleep(200 * time.Millisecond)
	calls = p.calls.Load()
	f.Forecast(ctx, freshRequest("berlin"))
	if got := p.calls.Load() - calls; got != 1 {
		t.Fatalf("half-open breaker let %d calls through, want 1 trial", got)
	}
	if st := f.BreakerState(); st != circuitbreaker.OpenState {
		t.Fatalf("breaker %s after a failed trial, want open", st)
	}

	// The model recovers: the next trial succeeds and closes the breaker.
	p.hang.Store(false)
	time.Sleep(200 * time.Millisecond)
	fc = f.Forecast(ctx, freshRequest("berlin"))
	if fc.Source != SourceModel {
		t.Fatalf("trial call: %+v, want MODEL", fc)
	}
	if st := f.BreakerState(); st != circuitbreaker.ClosedState {
		t.Fatalf("breaker %s after a successful trial, want closed", st)
	}
	// Every transition was exported: open twice, half-open twice, closed once.
	for state, want := range map[string]float64{"open": 2, "half-open": 2, "closed": 1} {
		if got := testutil.ToFloat64(f.m.breakerTransitions.WithLabelValues(state)); got != want {
			t.Errorf("transitions to %s = %v, want %v", state, got, want)
		}
	}
	if got := testutil.ToFloat64(f.m.breakerState); got != 0 {
		t.Errorf("breaker state gauge = %v, want 0 (closed)", got)
	}
}

func TestBatchUsesOneModelCall(t *testing.T) {
	p := &fakePredictor{value: 5}
	f := newTestForecaster(p, nil)
	reqs := []Request{freshRequest("a"), freshRequest("b"), {RegionID: "c", HorizonMinutes: 15, At: t0}, freshRequest("d")}
	out := f.ForecastBatch(context.Background(), reqs)
	if p.calls.Load() != 1 {
		t.Fatalf("%d model calls for one batch", p.calls.Load())
	}
	for i, want := range []Source{SourceModel, SourceModel, SourceStatic, SourceModel} {
		if out[i].Source != want || out[i].RegionID != reqs[i].RegionID {
			t.Fatalf("out[%d] = %+v, want %s for %s", i, out[i], want, reqs[i].RegionID)
		}
	}
}

// TestColdStartIsFlagged: a region without history for the hour of week is
// forecast by the global model and says so; a region with history does not.
func TestColdStartIsFlagged(t *testing.T) {
	f := newTestForecaster(&fakePredictor{value: 9}, fakeHistory{"berlin": 3})
	out := f.ForecastBatch(context.Background(), []Request{freshRequest("berlin"), freshRequest("oslo")})
	if out[0].Source != SourceModel || out[0].ColdStart {
		t.Fatalf("berlin (with history): %+v", out[0])
	}
	if out[1].Source != SourceModel || !out[1].ColdStart || out[1].Degraded() {
		t.Fatalf("oslo (no history): %+v, want a MODEL forecast flagged cold start, not degraded", out[1])
	}
}
