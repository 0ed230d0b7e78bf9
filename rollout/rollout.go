// Package rollout moves a candidate model version into service as a canary:
// the forecaster serves it to a growing share of regions (by default 10 %,
// then 50 %, then 100 %, one hour each) while the Controller compares it with
// the stable (active) version on inference latency (p99), error rate and,
// when an AccuracySource is given, accuracy against realised demand. A
// regression beyond the configured tolerances rolls it back on its own: the
// candidate's registry status becomes rejected, the reason is kept and
// logged, and all traffic returns to the stable version. After the last
// phase the candidate is promoted (registry status active; the previous
// active version is retired by the registry).
//
// In shadow mode the candidate predicts its share of the requests next to
// the stable version; its answers are only measured and logged, never
// served. A shadow rollout goes through its phases but is never promoted on
// its own: it stays at its last phase until an admin promotes or rolls it
// back (a regression still rolls it back).
//
// The traffic split is the forecaster's (inference.CanaryBucket of region,
// horizon and minute), so a share of 10 % is about 10 % of the forecasts
// even with a handful of regions, and a phase ends only once the candidate
// has served (and, with an accuracy source, been scored on) enough of them.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/registry"
)

var (
	// ErrRefused is returned when a version cannot be rolled out or promoted:
	// it was trained on another feature schema, its artifact is corrupt or
	// does not load, or it is already active.
	ErrRefused = errors.New("rollout: version refused")
	// ErrConflict is returned when the request does not fit the current
	// state: a rollout is already in progress, or none is to roll back.
	ErrConflict = errors.New("rollout: conflict")
)

// Registry is what the controller needs of the model registry;
// registry.Registry implements it. Unknown versions give errors wrapping
// registry.ErrNotFound.
type Registry interface {
	List(ctx context.Context, name string) ([]registry.Entry, error)
	Get(ctx context.Context, name, version string) (registry.Entry, error)
	Load(ctx context.Context, e registry.Entry) ([]byte, error)
	SetStatus(ctx context.Context, name, version string, status registry.Status) error
}

// AccuracySource gives the accuracy of a model version's forecasts joined
// with the demand realised since; the monitoring side implements it.
type AccuracySource interface {
	// MAPE is the mean absolute percentage error (0.12 = 12 %) of the
	// version's forecasts made since since, over samples forecasts whose
	// realised demand is known.
	MAPE(ctx context.Context, name, version string, since time.Time) (mape float64, samples int, err error)
}

// Phase is one step of a rollout: the candidate's share of the regions and
// how long it lasts.
type Phase struct {
	Percent  int
	Duration time.Duration
}

// Options configures a Controller. Zero values take the defaults.
type Options struct {
	// Name is the model name rolled out (default "demand").
	Name string
	// Runtime runs loaded candidates (default onnxruntime).
	Runtime inference.Runtime
	// Phases are the steps of a rollout (default 10 %, 50 %, 100 %, 1 h each).
	Phases []Phase
	// CheckInterval is how often the comparison is made and phase ends are
	// checked (default 10 s).
	CheckInterval time.Duration
	// MinSamples is the number of forecast rows (for the error rate) and of
	// inference calls (for latency) a version needs in a phase before it is
	// compared, and the forecasts the candidate must have served before
	// its phase may end: until then the phase is extended (Status.Waiting
	// says so). Default 100.
	MinSamples int
	// MaxErrorRateIncrease is how much higher, in absolute terms, the
	// candidate's failure rate (errors, timeouts, open breaker) may be than
	// the stable one's (default 0.01, one point).
	MaxErrorRateIncrease float64
	// MaxLatencyRatio and LatencySlack bound the candidate's inference p99:
	// at most MaxLatencyRatio × the stable p99 + LatencySlack (defaults 1.5
	// and 5 ms, a tenth of the default inference timeout; the slack keeps
	// scheduling jitter on microsecond inferences from rolling back).
	MaxLatencyRatio float64
	LatencySlack    time.Duration
	// Accuracy compares MAPE on realised demand; nil compares no accuracy.
	Accuracy AccuracySource
	// MinAccuracySamples is the number of joined forecasts each version needs
	// before MAPE is compared and, with Accuracy set, the candidate's scored
	// forecasts a phase needs before it may end (default 50; negative:
	// phases do not wait for scores).
	MinAccuracySamples int
	// MaxMAPEIncrease is how much higher the candidate's MAPE may be than
	// the stable one's, in absolute terms (default 0.02, two points).
	MaxMAPEIncrease float64
	// LatencyWindow is how many recent inference durations are kept per
	// version for the p99 (default 4096).
	LatencyWindow int
	// Load turns an artifact into a servable model (default
	// inference.LoadModel on Runtime with features.V1, which refuses another
	// schema hash).
	Load func(data []byte) (*inference.Model, error)
	// Store shares the rollout with the other replicas of the service; nil
	// keeps it in this process (one replica). Each replica compares the
	// versions on the inference calls it made itself: the first one to see
	// a regression rolls the rollout back for all, and a phase ends once
	// one replica has seen MinSamples of the candidate's forecasts.
	Store      Store
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultPhases are the phases of a rollout when Options.Phases is empty.
var DefaultPhases = []Phase{{10, time.Hour}, {50, time.Hour}, {100, time.Hour}}

func (o *Options) defaults() {
	if o.Name == "" {
		o.Name = "demand"
	}
	if o.Runtime == "" {
		o.Runtime = inference.RuntimeORT
	}
	if len(o.Phases) == 0 {
		o.Phases = DefaultPhases
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 10 * time.Second
	}
	if o.MinSamples <= 0 {
		o.MinSamples = 100
	}
	if o.MaxErrorRateIncrease <= 0 {
		o.MaxErrorRateIncrease = 0.01
	}
	if o.MaxLatencyRatio <= 0 {
		o.MaxLatencyRatio = 1.5
	}
	if o.LatencySlack <= 0 {
		o.LatencySlack = 5 * time.Millisecond
	}
	if o.MinAccuracySamples == 0 {
		o.MinAccuracySamples = 50
	}
	if o.MaxMAPEIncrease <= 0 {
		o.MaxMAPEIncrease = 0.02
	}
	if o.LatencyWindow <= 0 {
		o.LatencyWindow = 4096
	}
	if o.Load == nil {
		rt := o.Runtime
		o.Load = func(data []byte) (*inference.Model, error) { return inference.LoadModel(data, rt) }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// State is the state of a rollout.
type State string

// The states of a rollout.
const (
	StateRunning    State = "running"
	StatePromoted   State = "promoted"
	StateRolledBack State = "rolled_back"
)

// PhaseRecord is a phase a rollout entered.
type PhaseRecord struct {
	Phase     int // 1-based
	Percent   int
	StartedAt time.Time
}

// VersionStats compares one version in a rollout.
type VersionStats struct {
	Version string
	// Requests and Errors count forecast rows given to the version's model
	// (in the current phase for the candidate, since the start for the
	// stable version) and those that failed.
	Requests, Errors int64
	ErrorRate        float64
	// P99 is the p99 of its inference calls over LatencyWindow recent calls;
	// Calls is how many that p99 is over.
	P99   time.Duration
	Calls int
	// MAPE on realised demand, when an AccuracySource knows it
	// (MAPESamples > 0).
	MAPE        float64
	MAPESamples int
}

// Status is a rollout: the one in progress or the last one finished.
type Status struct {
	Candidate string
	Stable    string
	State     State
	Shadow    bool
	Phase     int // 1-based index into the phases
	Phases    int
	Percent   int
	StartedAt time.Time
	// PhaseEndsAt is when the current phase ends; zero when it does not end
	// on its own (the last phase of a shadow rollout) or the rollout is over.
	PhaseEndsAt time.Time
	FinishedAt  time.Time
	// Reason says why the rollout was rolled back (or promoted by hand).
	Reason string
	// Waiting says why a phase whose time is over has not ended: too few
	// forecasts served by the candidate, or scored on realised demand.
	Waiting string
	History []PhaseRecord
	// CandidateStats and StableStats are the last comparison made.
	CandidateStats VersionStats
	StableStats    VersionStats
}

// Controller runs rollouts on a forecaster. It is safe for concurrent use;
// Run advances phases and checks for regressions.
type Controller struct {
	reg  Registry
	fc   *inference.Forecaster
	opts Options
	m    *metrics

	mu        sync.Mutex // serialises state changes
	cur       *Status    // nil before the first rollout
	gen       uint64     // generation of cur in opts.Store
	candModel *inference.Model
	phaseAt   time.Time // when the current phase began

	statsMu sync.Mutex // guards the counters fed by ObserveInference
	cand    *counter
	stable  *counter
}

// New returns a controller of fc's candidate slot and registers itself as
// fc's inference observer.
func New(reg Registry, fc *inference.Forecaster, opts Options) *Controller {
	opts.defaults()
	c := &Controller{reg: reg, fc: fc, opts: opts, m: newMetrics(opts.Registerer)}
	fc.SetObserver(c)
	return c
}

// Status returns the rollout in progress or the last one finished; ok is
// false when there has been none since the process started.
func (c *Controller) Status() (s Status, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return Status{}, false
	}
	s = *c.cur
	s.History = slices.Clone(c.cur.History)
	if s.State == StateRunning {
		s.CandidateStats, s.StableStats = c.snapshotStats()
		s.CandidateStats.MAPE, s.CandidateStats.MAPESamples = c.cur.CandidateStats.MAPE, c.cur.CandidateStats.MAPESamples
		s.StableStats.MAPE, s.StableStats.MAPESamples = c.cur.StableStats.MAPE, c.cur.StableStats.MAPESamples
	}
	return s, true
}

// Models lists the registered versions of the model, oldest first.
func (c *Controller) Models(ctx context.Context) ([]registry.Entry, error) {
	return c.reg.List(ctx, c.opts.Name)
}

// Serving returns the stable version served and the candidate (empty when
// none).
func (c *Controller) Serving() (stable, candidate string) {
	if m := c.fc.Model(); m != nil {
		stable = m.Version
	}
	if m, _, _ := c.fc.Candidate(); m != nil {
		candidate = m.Version
	}
	return stable, candidate
}

// Start begins the rollout of version: it checks and loads the artifact and
// serves the candidate to the first phase's share (in shadow mode, only runs
// it). Unknown versions give an error wrapping registry.ErrNotFound; a
// version with another schema hash, a corrupt artifact or the active
// version give ErrRefused; a rollout in progress gives ErrConflict. On any
// error the stable version keeps serving alone.
func (c *Controller) Start(ctx context.Context, version string, shadow bool) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.syncLocked(ctx); err != nil {
		return Status{}, err
	}
	if c.cur != nil && c.cur.State == StateRunning {
		return Status{}, fmt.Errorf("%w: the rollout of %s is in progress; promote or roll it back first", ErrConflict, c.cur.Candidate)
	}
	stable := c.fc.Model()
	if stable == nil {
		return Status{}, fmt.Errorf("%w: no stable model is served to compare %s with", ErrConflict, version)
	}
	e, err := c.reg.Get(ctx, c.opts.Name, version)
	if err != nil {
		return Status{}, fmt.Errorf("rollout of %s %s: %w", c.opts.Name, version, err)
	}
	if e.Status == registry.StatusActive || e.Version == stable.Version {
		return Status{}, fmt.Errorf("%w: %s is already the active version", ErrRefused, e.Version)
	}
	m, err := c.load(ctx, e)
	if err != nil {
		return Status{}, err
	}
	if e.Status != registry.StatusCandidate {
		if err := c.reg.SetStatus(ctx, e.Name, e.Version, registry.StatusCandidate); err != nil {
			_ = m.Close()
			return Status{}, fmt.Errorf("rollout of %s: record candidate status: %w", e.Version, err)
		}
	}
	now := time.Now().UTC()
	first := c.opts.Phases[0]
	if err := c.publishLocked(ctx, Status{
		Candidate: e.Version, Stable: stable.Version, State: StateRunning, Shadow: shadow,
		Phase: 1, Phases: len(c.opts.Phases), Percent: first.Percent, StartedAt: now,
		PhaseEndsAt: c.phaseEnd(1, now, shadow),
		History:     []PhaseRecord{{Phase: 1, Percent: first.Percent, StartedAt: now}},
	}); err != nil {
		_ = m.Close()
		return Status{}, err
	}
	c.phaseAt = now
	c.candModel = m
	c.resetStats(e.Version, stable.Version, true)
	if old := c.fc.SetCandidate(m, first.Percent, shadow); old != nil {
		closeLater(old)
	}
	c.m.started.Inc()
	c.opts.Logger.Info("rollout started", "candidate", e.Version, "stable", stable.Version, "shadow", shadow,
		"percent", first.Percent, "phases", len(c.opts.Phases))
	return c.statusLocked(), nil
}

// load fetches and loads a version, refusing another schema or a corrupt
// artifact with ErrRefused.
func (c *Controller) load(ctx context.Context, e registry.Entry) (*inference.Model, error) {
	if _, err := features.ByHash(e.SchemaHash); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, e.Version, err)
	}
	data, err := c.reg.Load(ctx, e)
	if errors.Is(err, registry.ErrCorruptArtifact) {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, e.Version, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load artifact of %s: %w", e.Version, err)
	}
	m, err := c.opts.Load(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not load: %w", ErrRefused, e.Version, err)
	}
	m.Name, m.Version = e.Name, e.Version
	return m, nil
}

// Promote makes version the active, served version. The candidate of the
// rollout in progress is promoted at once; another version can be promoted
// directly when no rollout is in progress (it is loaded first and refused
// like in Start). It returns the version's registry entry.
func (c *Controller) Promote(ctx context.Context, version string) (registry.Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.syncLocked(ctx); err != nil {
		return registry.Entry{}, err
	}
	if c.cur != nil && c.cur.State == StateRunning {
		if c.cur.Candidate != version {
			return registry.Entry{}, fmt.Errorf("%w: the rollout of %s is in progress; promote it or roll it back first", ErrConflict, c.cur.Candidate)
		}
		if err := c.promoteLocked(ctx, "promoted by an admin"); err != nil {
			return registry.Entry{}, err
		}
		return c.reg.Get(ctx, c.opts.Name, version)
	}
	e, err := c.reg.Get(ctx, c.opts.Name, version)
	if err != nil {
		return registry.Entry{}, fmt.Errorf("promote %s %s: %w", c.opts.Name, version, err)
	}
	if cur := c.fc.Model(); cur != nil && cur.Version == e.Version && e.Status == registry.StatusActive {
		return e, nil
	}
	m, err := c.load(ctx, e)
	if err != nil {
		return registry.Entry{}, err
	}
	if err := c.reg.SetStatus(ctx, e.Name, e.Version, registry.StatusActive); err != nil {
		_ = m.Close()
		return registry.Entry{}, fmt.Errorf("promote %s: %w", e.Version, err)
	}
	if old := c.fc.SetModel(m); old != nil {
		closeLater(old)
	}
	c.opts.Logger.Info("model promoted by an admin", "version", e.Version)
	return c.reg.Get(ctx, c.opts.Name, version)
}

// Rollback ends the rollout in progress: traffic returns to the stable
// version and the candidate is recorded as rejected with reason. Without a
// rollout in progress it gives ErrConflict.
func (c *Controller) Rollback(ctx context.Context, reason string) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.syncLocked(ctx); err != nil {
		return Status{}, err
	}
	if c.cur == nil || c.cur.State != StateRunning {
		return Status{}, fmt.Errorf("%w: no rollout in progress", ErrConflict)
	}
	if reason == "" {
		reason = "rolled back by an admin"
	}
	err := c.rollbackLocked(ctx, reason)
	return c.statusLocked(), err
}

// rollbackLocked sends the traffic back to stable first, then records the
// rejection.
func (c *Controller) rollbackLocked(ctx context.Context, reason string) error {
	if old := c.fc.ClearCandidate(); old != nil {
		closeLater(old)
	}
	c.candModel = nil
	c.freezeStats()
	shareErr := c.finishLocked(ctx, StateRolledBack, reason)
	c.m.finished.WithLabelValues(string(StateRolledBack)).Inc()
	c.opts.Logger.Warn("rollout rolled back", "candidate", c.cur.Candidate, "stable", c.cur.Stable,
		"phase", c.cur.Phase, "percent", c.cur.Percent, "reason", reason)
	if err := c.reg.SetStatus(ctx, c.opts.Name, c.cur.Candidate, registry.StatusRejected); err != nil {
		return fmt.Errorf("rollback of %s: traffic is back on %s but the rejection was not recorded: %w", c.cur.Candidate, c.cur.Stable, err)
	}
	return shareErr
}

// promoteLocked records the candidate as active (retiring the stable one)
// and serves it to everyone.
func (c *Controller) promoteLocked(ctx context.Context, reason string) error {
	if err := c.reg.SetStatus(ctx, c.opts.Name, c.cur.Candidate, registry.StatusActive); err != nil {
		return fmt.Errorf("promote %s: %w", c.cur.Candidate, err)
	}
	if old := c.fc.SetModel(c.candModel); old != nil {
		closeLater(old)
	}
	c.fc.ClearCandidate()
	c.candModel = nil
	c.freezeStats()
	err := c.finishLocked(ctx, StatePromoted, reason)
	c.m.finished.WithLabelValues(string(StatePromoted)).Inc()
	c.opts.Logger.Info("rollout promoted", "version", c.cur.Candidate, "retired", c.cur.Stable, "reason", reason)
	return err
}

// finishLocked ends the running rollout, already taken out of service
// here, with state: for every replica when it can be stored (a phase
// change another replica stored meanwhile does not stop it; a promotion or
// rollback it stored first wins), here in any case, so this replica never
// serves the candidate again on its own.
func (c *Controller) finishLocked(ctx context.Context, state State, reason string) error {
	next := c.statusLocked()
	next.State, next.Reason, next.FinishedAt, next.PhaseEndsAt, next.Waiting = state, reason, time.Now().UTC(), time.Time{}, ""
	err := c.publishLocked(ctx, next)
	if errors.Is(err, ErrConflict) {
		if err = c.syncLocked(ctx); err == nil && c.cur.State == StateRunning && c.cur.Candidate == next.Candidate {
			if old := c.fc.ClearCandidate(); old != nil {
				closeLater(old)
			}
			c.candModel = nil
			err = c.publishLocked(ctx, next)
		}
		if err == nil && c.cur.State != StateRunning {
			return nil
		}
	}
	if err != nil {
		c.cur = &next
		c.exportPhase()
		return fmt.Errorf("rollout %s here, but not shared with the other replicas: %w", state, err)
	}
	return nil
}

// Run applies the shared rollout (Sync) and checks it every CheckInterval
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.CheckInterval)
	defer t.Stop()
	for {
		if err := c.Sync(ctx); err != nil && ctx.Err() == nil {
			c.opts.Logger.Error("rollout: applying the shared state", "err", err)
		}
		if err := c.Check(ctx); err != nil && ctx.Err() == nil {
			c.opts.Logger.Error("rollout check", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check compares the candidate with the stable version, rolls back on a
// regression, and otherwise moves to the next phase (or promotes) when the
// current phase is over. Run calls it every CheckInterval.
func (c *Controller) Check(ctx context.Context) error {
	// Accuracy is asked without the lock: a slow source must not hold up
	// Status, Promote or Rollback.
	c.mu.Lock()
	if c.cur == nil || c.cur.State != StateRunning {
		c.mu.Unlock()
		return nil
	}
	run, phase, candidate, stableVersion := c.cur.StartedAt, c.cur.Phase, c.cur.Candidate, c.cur.Stable
	phaseAt := c.phaseAt
	c.mu.Unlock()
	var candMAPE, stableMAPE float64
	var candN, stableN int
	if c.opts.Accuracy != nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		candMAPE, candN, err = c.opts.Accuracy.MAPE(actx, c.opts.Name, candidate, phaseAt)
		if err == nil {
			stableMAPE, stableN, err = c.opts.Accuracy.MAPE(actx, c.opts.Name, stableVersion, run)
		}
		cancel()
		if err != nil {
			c.opts.Logger.Warn("rollout: accuracy not available; compared on latency and errors only", "err", err)
			candN, stableN = 0, 0
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || c.cur.State != StateRunning || !c.cur.StartedAt.Equal(run) || c.cur.Phase != phase {
		return nil // finished or moved on meanwhile
	}
	cand, stable := c.snapshotStats()
	cand.MAPE, cand.MAPESamples = candMAPE, candN
	stable.MAPE, stable.MAPESamples = stableMAPE, stableN
	c.cur.CandidateStats, c.cur.StableStats = cand, stable
	c.m.export(cand, stable)
	if reason := c.regression(cand, stable); reason != "" {
		return c.rollbackLocked(ctx, reason)
	}
	if c.cur.PhaseEndsAt.IsZero() || time.Now().Before(c.cur.PhaseEndsAt) {
		return nil
	}
	if why := c.evidenceMissing(cand); why != "" {
		if c.cur.Waiting != why {
			c.opts.Logger.Warn("rollout phase extended", "candidate", cand.Version, "phase", c.cur.Phase, "why", why)
		}
		c.cur.Waiting = why
		return nil
	}
	c.cur.Waiting = ""
	if c.cur.Phase == len(c.opts.Phases) {
		return c.promoteLocked(ctx, fmt.Sprintf("passed %d phases", len(c.opts.Phases)))
	}
	now := time.Now().UTC()
	next := c.statusLocked()
	next.Phase++
	p := c.opts.Phases[next.Phase-1]
	next.Percent, next.PhaseEndsAt = p.Percent, c.phaseEnd(next.Phase, now, next.Shadow)
	next.History = append(next.History, PhaseRecord{Phase: next.Phase, Percent: p.Percent, StartedAt: now})
	if err := c.publishLocked(ctx, next); err != nil {
		if errors.Is(err, ErrConflict) {
			return c.syncLocked(ctx) // another replica ended the phase first
		}
		return err
	}
	c.phaseAt = now
	c.resetStats(c.cur.Candidate, c.cur.Stable, false)
	c.fc.SetCandidate(c.candModel, p.Percent, c.cur.Shadow)
	c.opts.Logger.Info("rollout phase", "candidate", c.cur.Candidate, "phase", c.cur.Phase, "percent", p.Percent, "shadow", c.cur.Shadow)
	return nil
}

// evidenceMissing says why a phase that is over cannot end yet: the
// candidate has served fewer than MinSamples forecasts in it or, with an
// AccuracySource, fewer than MinAccuracySamples have been scored on realised
// demand. "" when the evidence is there.
func (c *Controller) evidenceMissing(cand VersionStats) string {
	if cand.Requests < int64(c.opts.MinSamples) {
		return fmt.Sprintf("phase extended: the candidate served %d forecasts, it needs %d", cand.Requests, c.opts.MinSamples)
	}
	if c.opts.Accuracy != nil && c.opts.MinAccuracySamples > 0 && cand.MAPESamples < c.opts.MinAccuracySamples {
		return fmt.Sprintf("phase extended: %d of the candidate's forecasts are scored on realised demand, it needs %d",
			cand.MAPESamples, c.opts.MinAccuracySamples)
	}
	return ""
}

// regression returns why the candidate does worse than tolerated, or "".
func (c *Controller) regression(cand, stable VersionStats) string {
	o := c.opts
	if cand.Requests >= int64(o.MinSamples) {
		base := 0.0
		if stable.Requests >= int64(o.MinSamples) {
			base = stable.ErrorRate
		}
		if cand.ErrorRate > base+o.MaxErrorRateIncrease {
			return fmt.Sprintf("error rate %.2f%% of %d requests against %.2f%% for %s (tolerance +%.2f points)",
				100*cand.ErrorRate, cand.Requests, 100*base, stable.Version, 100*o.MaxErrorRateIncrease)
		}
	}
	if cand.Calls >= o.MinSamples && stable.Calls >= o.MinSamples {
		limit := time.Duration(float64(stable.P99)*o.MaxLatencyRatio) + o.LatencySlack
		if cand.P99 > limit {
			return fmt.Sprintf("inference p99 %s against %s for %s (limit %s)", cand.P99, stable.P99, stable.Version, limit)
		}
	}
	if cand.MAPESamples >= o.MinAccuracySamples && stable.MAPESamples >= o.MinAccuracySamples &&
		cand.MAPE > stable.MAPE+o.MaxMAPEIncrease {
		return fmt.Sprintf("MAPE %.1f%% over %d forecasts against %.1f%% for %s (tolerance +%.1f points)",
			100*cand.MAPE, cand.MAPESamples, 100*stable.MAPE, stable.Version, 100*o.MaxMAPEIncrease)
	}
	return ""
}

// phaseEnd is when phase (1-based) started at from ends; zero for the last
// phase of a shadow rollout, which waits for an admin.
func (c *Controller) phaseEnd(phase int, from time.Time, shadow bool) time.Time {
	if shadow && phase == len(c.opts.Phases) {
		return time.Time{}
	}
	return from.Add(c.opts.Phases[phase-1].Duration)
}

func (c *Controller) statusLocked() Status {
	s := *c.cur
	s.History = slices.Clone(c.cur.History)
	return s
}

func (c *Controller) exportPhase() {
	if c.cur == nil || c.cur.State != StateRunning {
		c.m.phase.Set(0)
		c.m.percent.Set(0)
		c.m.shadow.Set(0)
		return
	}
	c.m.phase.Set(float64(c.cur.Phase))
	c.m.percent.Set(float64(c.cur.Percent))
	if c.cur.Shadow {
		c.m.shadow.Set(1)
	} else {
		c.m.shadow.Set(0)
	}
}

// closeLater closes a model no longer served once in-flight calls are done.
func closeLater(m *inference.Model) {
	time.AfterFunc(10*time.Second, func() { _ = m.Close() })
}
