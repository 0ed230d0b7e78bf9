package inference

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/features"
)

// Source says which link of the fallback chain served a forecast.
type Source string

// The links of the fallback chain, best first.
const (
	SourceModel             Source = "MODEL"
	SourceCached            Source = "CACHED"
	SourceHistoricalAverage Source = "HISTORICAL_AVERAGE"
	SourceStatic            Source = "STATIC"
)

// Forecast is the demand expected in a region over the next HorizonMinutes.
type Forecast struct {
	RegionID       string  `json:"regionId"`
	HorizonMinutes int     `json:"horizonMinutes"`
	Demand         float64 `json:"demand"`
	Lower          float64 `json:"lower"`
	Upper          float64 `json:"upper"`
	ModelVersion   string  `json:"modelVersion,omitempty"`
	Source         Source  `json:"source"`
	// ColdStart: the region has no demand history for this hour of the week
	// yet, so the forecast comes from the global model alone (it is trained
	// across regions on their features, not on region ids).
	ColdStart   bool      `json:"coldStart,omitempty"`
	GeneratedAt time.Time `json:"generatedAt"`
	Warnings    []string  `json:"warnings,omitempty"`
	// TrainingData is the serving model's Model.DataSource ("generated"
	// or "real"), "" for fallbacks.
	TrainingData string `json:"trainingData,omitempty"`
}

// Known reports whether the forecast carries a demand figure (every source but STATIC).
func (f Forecast) Known() bool { return f.Source != SourceStatic }

// Degraded reports whether a fallback served the forecast.
func (f Forecast) Degraded() bool { return f.Source != SourceModel }

// Request asks for one forecast. Features and Cached come from the caller's
// batched Redis read (see QueueCached); FeaturesErr is set when that read failed.
type Request struct {
	RegionID       string
	HorizonMinutes int
	At             time.Time
	Features       features.Values
	FeaturesErr    error
	Cached         *Forecast
}

// HistoryLookup gives the mean demand per minute of a region at a time of the
// week; analytics.HistoricalAverages implements it.
type HistoryLookup interface {
	Lookup(regionID string, at time.Time) (perMinute float64, ok bool)
}

// ForecasterOptions configures a Forecaster. Zero values take the defaults.
type ForecasterOptions struct {
	// Timeout bounds one model inference (default 50 ms).
	Timeout time.Duration
	// FailureThreshold consecutive failures open the circuit breaker (default 5).
	FailureThreshold uint
	// OpenDelay is how long the breaker stays open before a trial (default 30 s).
	OpenDelay time.Duration
	// HalfOpenTrials is how many trial calls a half-open breaker lets through;
	// their success closes it (default 1).
	HalfOpenTrials uint
	// MaxFeatureAge: older online features are not fed to the model (default 5 min).
	MaxFeatureAge time.Duration
	// CacheTTL is the life of a forecast cached in Redis (default 30 min), and
	// CacheMaxAge the oldest cached forecast still served (default 30 min).
	CacheTTL    time.Duration
	CacheMaxAge time.Duration
	// CacheWriteInterval throttles cache writes per region and horizon (default 1 s).
	CacheWriteInterval time.Duration
	// ShadowConcurrency bounds the shadow inference calls running at once;
	// more are dropped (default 4).
	ShadowConcurrency int
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
}

func (o *ForecasterOptions) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = 50 * time.Millisecond
	}
	if o.FailureThreshold == 0 {
		o.FailureThreshold = 5
	}
	if o.OpenDelay <= 0 {
		o.OpenDelay = 30 * time.Second
	}
	if o.HalfOpenTrials == 0 {
		o.HalfOpenTrials = 1
	}
	if o.MaxFeatureAge <= 0 {
		o.MaxFeatureAge = 5 * time.Minute
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 30 * time.Minute
	}
	if o.CacheMaxAge <= 0 {
		o.CacheMaxAge = 30 * time.Minute
	}
	if o.CacheWriteInterval <= 0 {
		o.CacheWriteInterval = time.Second
	}
	if o.ShadowConcurrency <= 0 {
		o.ShadowConcurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Forecaster serves forecasts through the fallback chain. It is safe for
// concurrent use; Run writes model forecasts to the Redis cache in the
// background.
type Forecaster struct {
	opts    ForecasterOptions
	rdb     redis.UniversalClient // may be nil: no shared cache
	history HistoryLookup         // may be nil
	model   atomic.Pointer[Model]
	breaker circuitbreaker.CircuitBreaker[[]float32]
	exec    failsafe.Executor[[]float32]

	lastGood sync.Map // cacheKey → Forecast: the in-process copy of the cache
	writes   chan Forecast
	written  sync.Map // cacheKey → time.Time of the last cache write
	m        *forecastMetrics

	cand      atomic.Pointer[candidate] // nil: no rollout
	observer  atomic.Pointer[Observer]
	shadowSem chan struct{}
}

// NewForecaster returns a forecaster. rdb and history may be nil.
func NewForecaster(rdb redis.UniversalClient, history HistoryLookup, opts ForecasterOptions) *Forecaster {
	opts.defaults()
	f := &Forecaster{
		opts:    opts,
		rdb:     rdb,
		history: history,
		writes:  make(chan Forecast, 1024),
		m:       newForecastMetrics(opts.Registerer),
	}
	f.shadowSem = make(chan struct{}, opts.ShadowConcurrency)
	f.exec = f.newExecutor(func(e circuitbreaker.StateChangedEvent) {
		opts.Logger.Warn("inference circuit breaker state changed",
			"from", e.OldState.String(), "to", e.NewState.String())
		f.m.breakerTransitions.WithLabelValues(e.NewState.String()).Inc()
		f.m.breakerState.Set(float64(e.NewState))
	})
	return f
}

// newExecutor builds circuitbreaker ∘ timeout for one model version; the
// stable version's breaker is kept in f.breaker (onChange non-nil).
func (f *Forecaster) newExecutor(onChange func(circuitbreaker.StateChangedEvent)) failsafe.Executor[[]float32] {
	b := circuitbreaker.NewBuilder[[]float32]().
		WithFailureThreshold(f.opts.FailureThreshold).
		WithDelay(f.opts.OpenDelay).
		WithSuccessThreshold(f.opts.HalfOpenTrials)
	if onChange != nil {
		b = b.OnStateChanged(onChange)
	}
	breaker := b.Build()
	if onChange != nil {
		f.breaker = breaker
	}
	to := timeout.NewBuilder[[]float32](f.opts.Timeout).Build()
	// The breaker is outside the timeout, so timeouts count as failures.
	return failsafe.With[[]float32](breaker, to)
}

// SetModel makes m the served model; it returns the previous one (nil at
// first) so the caller can close it once in-flight calls are done.
func (f *Forecaster) SetModel(m *Model) *Model {
	old := f.model.Swap(m)
	if m != nil {
		f.m.modelInfo.Reset()
		f.m.modelInfo.WithLabelValues(m.Name, m.Version).Set(1)
	}
	return old
}

// Model returns the served model, or nil.
func (f *Forecaster) Model() *Model { return f.model.Load() }

// BreakerState returns the circuit breaker's state.
func (f *Forecaster) BreakerState() circuitbreaker.State { return f.breaker.State() }

// Forecast serves one forecast.
func (f *Forecaster) Forecast(ctx context.Context, req Request) Forecast {
	return f.ForecastBatch(ctx, []Request{req})[0]
}

// ForecastBatch serves many forecasts with one model call per served model
// version. Every request gets an answer: failures of the model, Redis or
// ClickHouse only move it down the fallback chain.
//
// With a candidate set (SetCandidate), the requests whose region falls in
// the candidate's share (Bucket(regionID) < percent) are served by the
// candidate; should the candidate fail, they are served by the stable model.
// In shadow mode the candidate predicts those requests in the background and
// its answers are only measured and logged.
func (f *Forecaster) ForecastBatch(ctx context.Context, reqs []Request) []Forecast {
	out := make([]Forecast, len(reqs))
	reasons := make([]string, len(reqs))
	m := f.model.Load()
	c := f.cand.Load()

	var stable, canary, shadow batch
	for i, r := range reqs {
		toCandidate := c != nil && CanaryBucket(r.RegionID, r.HorizonMinutes, r.At) < c.percent
		switch {
		case m == nil && (!toCandidate || c.shadow):
			reasons[i] = "no model loaded"
		case r.FeaturesErr != nil:
			reasons[i] = "online features unavailable"
		case !r.Features.Found():
			reasons[i] = "no online features for the region"
		case r.At.Sub(r.Features.UpdatedAt) > f.opts.MaxFeatureAge:
			reasons[i] = fmt.Sprintf("online features stale (%s old)", r.At.Sub(r.Features.UpdatedAt).Round(time.Second))
		default:
			switch {
			case toCandidate && c.shadow:
				shadow.add(i, c.model, r)
				stable.add(i, m, r)
			case toCandidate:
				canary.add(i, c.model, r)
			default:
				stable.add(i, m, r)
			}
		}
	}
	if len(canary.rows) > 0 {
		preds, err := f.infer(c.exec, c.model, RoleCandidate, canary.rows)
		if err != nil {
			if m == nil {
				for _, i := range canary.idx {
					reasons[i] = inferenceFailure(err, f.opts.Timeout)
				}
			} else {
				// The stable model answers what the candidate could not.
				for _, i := range canary.idx {
					stable.add(i, m, reqs[i])
				}
			}
		} else {
			f.fill(out, reqs, &canary, preds, c.model)
		}
	}
	if len(stable.rows) > 0 {
		preds, err := f.infer(f.exec, m, RoleStable, stable.rows)
		if err != nil {
			reason := inferenceFailure(err, f.opts.Timeout)
			for _, i := range stable.idx {
				reasons[i] = reason
			}
		} else {
			f.fill(out, reqs, &stable, preds, m)
		}
	}
	if len(shadow.rows) > 0 {
		f.runShadow(ctx, c, reqs, out, shadow)
	}
	for i, r := range reqs {
		if out[i].Source == "" {
			out[i] = f.fallback(r, reasons[i])
		}
		f.m.served.WithLabelValues(string(out[i].Source)).Inc()
		if out[i].Source == SourceModel {
			f.m.servedByVersion.WithLabelValues(out[i].ModelVersion).Inc()
		}
	}
	return out
}

// batch is the rows of one model call and the indices of their requests,
// with the factor scaling each prediction to the requested horizon and the
// row's warning.
type batch struct {
	idx      []int
	rows     [][]float32
	scale    []float64
	warnings []string
}

func (b *batch) add(i int, m *Model, r Request) {
	row, scale, warning := m.Row(r)
	b.idx = append(b.idx, i)
	b.rows = append(b.rows, row)
	b.scale = append(b.scale, scale)
	b.warnings = append(b.warnings, warning)
}

// infer runs one model call through exec and reports it to the metrics and
// the observer.
func (f *Forecaster) infer(exec failsafe.Executor[[]float32], m *Model, role Role, rows [][]float32) ([]float32, error) {
	start := time.Now()
	preds, err := exec.GetWithExecution(func(e failsafe.Execution[[]float32]) ([]float32, error) {
		return predictCtx(e.Context(), m.Predictor, rows)
	})
	took := time.Since(start)
	f.m.inferenceSeconds.Observe(took.Seconds())
	f.m.versionSeconds.WithLabelValues(m.Version, string(role)).Observe(took.Seconds())
	if err == nil && len(preds) != len(rows) {
		err = fmt.Errorf("model returned %d predictions for %d rows", len(preds), len(rows))
	}
	if err != nil {
		f.m.inferenceErrors.WithLabelValues(failureKind(err)).Inc()
		f.m.versionErrors.WithLabelValues(m.Version, string(role), failureKind(err)).Inc()
	}
	if o := f.observer.Load(); o != nil {
		(*o).ObserveInference(Observation{Version: m.Version, Role: role, Rows: len(rows), Duration: took, Err: err})
	}
	return preds, err
}

// fill turns a model call's predictions into served forecasts.
func (f *Forecaster) fill(out []Forecast, reqs []Request, b *batch, preds []float32, m *Model) {
	for k, i := range b.idx {
		r := reqs[i]
		fc := Forecast{
			RegionID:       r.RegionID,
			HorizonMinutes: r.HorizonMinutes,
			Demand:         math.Max(0, float64(preds[k])*b.scale[k]),
			ModelVersion:   m.Version,
			Source:         SourceModel,
			GeneratedAt:    r.At,
			TrainingData:   m.DataSource(),
		}
		fc.Lower, fc.Upper = interval(fc.Demand, 1)
		if w := b.warnings[k]; w != "" {
			fc.Warnings = append(fc.Warnings, w)
		}
		if f.history != nil {
			if _, ok := f.history.Lookup(r.RegionID, r.At); !ok {
				fc.ColdStart = true
			}
		}
		out[i] = fc
		f.remember(fc)
	}
}

// runShadow lets the candidate predict the shadow rows in the background;
// the predictions are measured and logged, never served. At most
// ShadowConcurrency calls run at once; beyond, shadow calls are dropped.
func (f *Forecaster) runShadow(ctx context.Context, c *candidate, reqs []Request, served []Forecast, b batch) {
	select {
	case f.shadowSem <- struct{}{}:
	default:
		f.m.shadowDropped.Inc()
		return
	}
	regions := make([]string, len(b.idx))
	stable := make([]float64, len(b.idx))
	for k, i := range b.idx {
		regions[k] = reqs[i].RegionID
		stable[k] = served[i].Demand
	}
	go func() {
		defer func() { <-f.shadowSem }()
		preds, err := f.infer(c.exec, c.model, RoleShadow, b.rows)
		if err != nil {
			f.opts.Logger.DebugContext(ctx, "shadow forecast failed", "version", c.model.Version, "err", err)
			return
		}
		for k := range preds {
			f.opts.Logger.DebugContext(ctx, "shadow forecast", "region", regions[k], "version", c.model.Version,
				"demand", math.Max(0, float64(preds[k])*b.scale[k]), "served_demand", stable[k])
		}
	}()
}

// CanaryBucket maps a forecast request to 0..99 for the canary split: FNV-1a
// of the region, the horizon and the second of at. It is stable (every
// request for a region and horizon in a second is served by the same version,
// on every replica) yet fine enough that a 10 % share is about 10 % of the
// forecasts with only a few regions; hashing the region alone gave 0 of 430
// forecasts to the candidate at 10 % with five regions.
func CanaryBucket(region string, horizonMinutes int, at time.Time) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(region); i++ {
		h = (h ^ uint32(region[i])) * prime
	}
	for _, v := range [2]uint64{uint64(horizonMinutes), uint64(at.Unix())} {
		for range 8 {
			h = (h ^ uint32(v&0xff)) * prime
			v >>= 8
		}
	}
	return int(h % 100)
}

// Role says why a model version ran an inference.
type Role string

// The roles of an inference call.
const (
	RoleStable    Role = "stable"    // the active version, serving
	RoleCandidate Role = "candidate" // the canary, serving its share
	RoleShadow    Role = "shadow"    // the canary in shadow mode: measured, never served
)

// Observation is one model call, reported to the Observer.
type Observation struct {
	Version  string
	Role     Role
	Rows     int
	Duration time.Duration
	Err      error // nil on success; timeouts and an open breaker are failures
}

// Observer is told about every model call; rollout.Controller implements
// it to compare a candidate with the stable version. It must be fast and
// safe for concurrent use.
type Observer interface {
	ObserveInference(Observation)
}

// SetObserver sets the observer of model calls (nil: none).
func (f *Forecaster) SetObserver(o Observer) {
	if o == nil {
		f.observer.Store(nil)
		return
	}
	f.observer.Store(&o)
}

// candidate is the canary model and its share of the traffic.
type candidate struct {
	model   *Model
	percent int
	shadow  bool
	exec    failsafe.Executor[[]float32] // its own breaker: a failing candidate does not open the stable one
}

// SetCandidate makes m the candidate served (or, with shadow, only run) for
// the requests whose CanaryBucket is below percent (0..100). Calling it again with
// the same model changes the share and keeps the candidate's circuit
// breaker. It returns the previous candidate when it is another model, so
// the caller can close it.
func (f *Forecaster) SetCandidate(m *Model, percent int, shadow bool) *Model {
	percent = min(max(percent, 0), 100)
	old := f.cand.Load()
	c := &candidate{model: m, percent: percent, shadow: shadow}
	if old != nil && old.model == m {
		c.exec = old.exec
	} else {
		c.exec = f.newExecutor(nil)
	}
	f.cand.Store(c)
	if old != nil && old.model != m {
		return old.model
	}
	return nil
}

// ClearCandidate sends all traffic back to the stable model; it returns the
// candidate (nil if none) so the caller can close it.
func (f *Forecaster) ClearCandidate() *Model {
	old := f.cand.Swap(nil)
	if old == nil {
		return nil
	}
	return old.model
}

// Candidate returns the candidate model, its share and mode (nil if none).
func (f *Forecaster) Candidate() (m *Model, percent int, shadow bool) {
	c := f.cand.Load()
	if c == nil {
		return nil, 0, false
	}
	return c.model, c.percent, c.shadow
}

// predictCtx runs the predictor but returns as soon as ctx ends, so a runtime
// that hangs cannot hold the request past its timeout.
func predictCtx(ctx context.Context, p Predictor, rows [][]float32) ([]float32, error) {
	type result struct {
		out []float32
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := p.Predict(ctx, rows)
		ch <- result{out, err}
	}()
	select {
	case r := <-ch:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func inferenceFailure(err error, limit time.Duration) string {
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen):
		return "model circuit breaker open"
	case errors.Is(err, timeout.ErrExceeded):
		return fmt.Sprintf("model inference timed out after %s", limit)
	default:
		return "model inference failed: " + err.Error()
	}
}

func failureKind(err error) string {
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen):
		return "breaker_open"
	case errors.Is(err, timeout.ErrExceeded):
		return "timeout"
	default:
		return "error"
	}
}

// fallback walks the chain below the model: cached, historical average, static.
func (f *Forecaster) fallback(r Request, reason string) Forecast {
	base := Forecast{RegionID: r.RegionID, HorizonMinutes: r.HorizonMinutes, GeneratedAt: r.At}
	warn := func(fc Forecast, served string) Forecast {
		fc.Warnings = append(fc.Warnings, fmt.Sprintf("forecast from %s: %s", served, reason))
		return fc
	}
	cached := r.Cached
	if c, ok := f.lastGood.Load(cacheKey(r.RegionID, r.HorizonMinutes)); ok {
		if lg := c.(Forecast); cached == nil || lg.GeneratedAt.After(cached.GeneratedAt) {
			cached = &lg
		}
	}
	if cached != nil && r.At.Sub(cached.GeneratedAt) <= f.opts.CacheMaxAge {
		fc := *cached
		fc.Source = SourceCached
		fc.Warnings = nil
		return warn(fc, fmt.Sprintf("cache (model %s, %s old)", fc.ModelVersion, r.At.Sub(fc.GeneratedAt).Round(time.Second)))
	}
	if f.history != nil {
		if perMinute, ok := f.history.Lookup(r.RegionID, r.At); ok {
			fc := base
			fc.Source = SourceHistoricalAverage
			fc.Demand = perMinute * float64(r.HorizonMinutes)
			fc.Lower, fc.Upper = interval(fc.Demand, 2)
			return warn(fc, "historical average for this hour of week")
		}
	}
	fc := base
	fc.Source = SourceStatic
	return warn(fc, "static base price (no forecast available)")
}

// interval is an 80 % band around a count forecast, treating the count as
// Poisson; widen > 1 widens it for the cruder fallbacks. (A later version
// takes quantiles from the model's validation residuals.)
func interval(demand, widen float64) (lower, upper float64) {
	half := 1.2816 * math.Sqrt(math.Max(demand, 1)) * widen
	return math.Max(0, demand-half), demand + half
}

func cacheKey(regionID string, horizon int) string {
	return fmt.Sprintf("forecast:{%s}:%d", regionID, horizon)
}

// remember keeps a model forecast as the region's last good one, in process
// and (throttled, in the background) in Redis.
func (f *Forecaster) remember(fc Forecast) {
	key := cacheKey(fc.RegionID, fc.HorizonMinutes)
	f.lastGood.Store(key, fc)
	if f.rdb == nil {
		return
	}
	if t, ok := f.written.Load(key); ok && fc.GeneratedAt.Sub(t.(time.Time)) < f.opts.CacheWriteInterval {
		return
	}
	f.written.Store(key, fc.GeneratedAt)
	select {
	case f.writes <- fc:
	default:
		f.m.cacheWriteDropped.Inc()
	}
}

// Run writes remembered forecasts to Redis until ctx ends.
func (f *Forecaster) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case fc := <-f.writes:
			if f.rdb == nil {
				continue
			}
			b, _ := json.Marshal(fc)
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			err := f.rdb.Set(wctx, cacheKey(fc.RegionID, fc.HorizonMinutes), b, f.opts.CacheTTL).Err()
			cancel()
			if err != nil {
				f.m.cacheWriteErrors.Inc()
				f.opts.Logger.Debug("forecast cache write failed", "region", fc.RegionID, "err", err)
			}
		}
	}
}

// QueueCached adds the read of a region's cached forecast to a pipeline; the
// returned function gives it (nil when absent) after the pipeline ran.
func QueueCached(ctx context.Context, p redis.Pipeliner, regionID string, horizon int) func() (*Forecast, error) {
	cmd := p.Get(ctx, cacheKey(regionID, horizon))
	return func() (*Forecast, error) {
		b, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read cached forecast of %s: %w", regionID, err)
		}
		var fc Forecast
		if err := json.Unmarshal(b, &fc); err != nil {
			return nil, fmt.Errorf("decode cached forecast of %s: %w", regionID, err)
		}
		return &fc, nil
	}
}

type forecastMetrics struct {
	inferenceSeconds   prometheus.Histogram
	inferenceErrors    *prometheus.CounterVec
	served             *prometheus.CounterVec
	breakerState       prometheus.Gauge
	breakerTransitions *prometheus.CounterVec
	cacheWriteErrors   prometheus.Counter
	cacheWriteDropped  prometheus.Counter
	modelInfo          *prometheus.GaugeVec
	servedByVersion    *prometheus.CounterVec
	versionSeconds     *prometheus.HistogramVec
	versionErrors      *prometheus.CounterVec
	shadowDropped      prometheus.Counter
}

func newForecastMetrics(reg prometheus.Registerer) *forecastMetrics {
	m := &forecastMetrics{
		inferenceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "surge_inference_duration_seconds",
			Help:    "Duration of model inference calls (one call may hold a batch of rows), failures included.",
			Buckets: []float64{.00001, .00002, .00005, .0001, .0002, .0005, .001, .002, .005, .01, .025, .05, .1},
		}),
		inferenceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_inference_errors_total",
			Help: "Failed model inference calls by kind (timeout, breaker_open, error).",
		}, []string{"kind"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_forecasts_total",
			Help: "Forecasts served, by the source of the fallback chain that served them.",
		}, []string{"source"}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_inference_circuit_breaker_state",
			Help: "State of the inference circuit breaker: 0 closed, 1 open, 2 half-open.",
		}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_inference_circuit_breaker_transitions_total",
			Help: "Transitions of the inference circuit breaker, by the state entered.",
		}, []string{"state"}),
		cacheWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_forecast_cache_write_errors_total",
			Help: "Failed writes of forecasts to the Redis cache.",
		}),
		cacheWriteDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_forecast_cache_writes_dropped_total",
			Help: "Forecast cache writes dropped because the write queue was full.",
		}),
		modelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_model_info",
			Help: "The served model: 1 for the loaded name and version.",
		}, []string{"name", "version"}),
	}
	m.servedByVersion = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "surge_forecasts_by_version_total",
		Help: "Model forecasts served, by the model version that served them.",
	}, []string{"version"})
	m.versionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "surge_inference_version_duration_seconds",
		Help:    "Duration of model inference calls per model version and role (stable, candidate, shadow), failures included.",
		Buckets: []float64{.00001, .00002, .00005, .0001, .0002, .0005, .001, .002, .005, .01, .025, .05, .1},
	}, []string{"version", "role"})
	m.versionErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "surge_inference_version_errors_total",
		Help: "Failed model inference calls per model version, role and kind (timeout, breaker_open, error).",
	}, []string{"version", "role", "kind"})
	m.shadowDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "surge_shadow_inferences_dropped_total",
		Help: "Shadow inference calls dropped because too many were running.",
	})
	if reg != nil {
		reg.MustRegister(m.inferenceSeconds, m.inferenceErrors, m.served, m.breakerState,
			m.breakerTransitions, m.cacheWriteErrors, m.cacheWriteDropped, m.modelInfo,
			m.servedByVersion, m.versionSeconds, m.versionErrors, m.shadowDropped)
	}
	return m
}
