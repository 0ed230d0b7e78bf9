package experiments

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/rules"
)

// Errors a caller can act on; check them with errors.Is.
var (
	ErrNotFound = errors.New("experiment not found")
	ErrExists   = errors.New("experiment already exists")
	// ErrStatus: the operation does not apply to the experiment's status.
	ErrStatus = errors.New("experiment status does not allow this")
	// ErrOverlap: a running experiment of the same layer targets the same traffic.
	ErrOverlap = errors.New("experiment overlaps a running experiment of its layer")
	// ErrNoWinner: rolloutWinner without a winning variant.
	ErrNoWinner = errors.New("experiment has no winner to roll out")
)

// Publisher sends exposure records; it must not block (publish.Publisher queues).
type Publisher interface {
	// Publish reports false when the record was dropped (buffer full).
	Publish(topic, key string, value []byte) bool
}

// Rules reads and writes the pricing rules the strategies apply to;
// rules.Cache implements it.
type Rules interface {
	Get(regionID, productType string, at time.Time) (pricing.Rule, bool)
	Regions() []rules.Region
	Put(ctx context.Context, r pricing.Rule, actor string) (pricing.Rule, error)
}

// Topic is the Kafka topic of exposures.
const Topic = "experiments"

// Options configures a Service. Zero values take the defaults.
type Options struct {
	// Interval between reloads of the definitions (default 10 s).
	Interval time.Duration
	// DayLength is the experiment day given to new experiments (default
	// 24 h; the local demo shortens it so that a week passes in minutes).
	DayLength time.Duration
	// Publisher receives the exposures; nil logs none.
	Publisher Publisher
	// Rules are checked against the strategies at start and receive the
	// winner's rule versions; nil refuses start and roll-out.
	Rules Rules
	// ExposureMemory is how many (experiment, user, day) exposures are
	// remembered to log each at most once (default 200,000); past that the
	// oldest are forgotten, and a user seen again the same day is logged
	// again (results count users, not records, so nothing is counted twice).
	ExposureMemory int
	// ResultsInterval is how old a running experiment's results snapshot
	// may grow before Run computes a new one (default 5 min); reading
	// results never waits for ClickHouse to aggregate unless no snapshot
	// exists yet or a refresh is asked for.
	ResultsInterval time.Duration
	// Analysis tunes the statistics of Results.
	Analysis   AnalysisOptions
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.DayLength <= 0 {
		o.DayLength = DefaultDayLength
	}
	if o.ResultsInterval <= 0 {
		o.ResultsInterval = 5 * time.Minute
	}
	if o.ExposureMemory <= 0 {
		o.ExposureMemory = 200_000
	}
	o.Analysis.defaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Service manages experiments and assigns users to them. Reads (Assign,
// Get, List) take no lock; writes are serialised in process. Run reloads
// the definitions from ClickHouse so that changes made through another
// replica arrive without a restart.
type Service struct {
	store store
	conn  driver.Conn
	opts  Options
	snap  atomic.Pointer[snapshot]
	mu    sync.Mutex // serialises writes
	kick  chan struct{}
	seen  *lru.Cache[exposureKey, struct{}]
	m     *metrics
	// refreshing shares concurrent results refreshes of one experiment.
	refreshing singleflight.Group
}

// snapshot is immutable once published.
type snapshot struct {
	all     map[string]*Experiment
	running []*Experiment // sorted by layer, then id
}

// New returns a service over conn (the migrated database). It holds no
// experiment until the first Refresh (Run does one at once).
func New(conn driver.Conn, opts Options) (*Service, error) {
	opts.defaults()
	seen, err := lru.New[exposureKey, struct{}](opts.ExposureMemory)
	if err != nil {
		return nil, err
	}
	s := &Service{store: store{conn}, conn: conn, opts: opts, kick: make(chan struct{}, 1), seen: seen, m: newMetrics()}
	s.snap.Store(newSnapshot(nil))
	if opts.Registerer != nil {
		if err := s.m.register(opts.Registerer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func newSnapshot(exps []Experiment) *snapshot {
	s := &snapshot{all: make(map[string]*Experiment, len(exps))}
	for i := range exps {
		e := &exps[i]
		s.all[e.ID] = e
		if e.Status == StatusRunning {
			s.running = append(s.running, e)
		}
	}
	slices.SortFunc(s.running, func(a, b *Experiment) int {
		return cmp.Or(cmp.Compare(a.Layer, b.Layer), cmp.Compare(a.ID, b.ID))
	})
	return s
}

// Run reloads at once, then every Interval and after each change, until ctx
// ends; failures are logged and the last good set keeps serving. Beside
// it, the results snapshots of started experiments are refreshed once
// they are ResultsInterval old (and once more after a stop).
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(min(s.opts.ResultsInterval, time.Minute))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.refreshDue(ctx)
			}
		}
	}()
	defer func() { <-done }()
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("experiments reload failed; serving the last good set", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// Refresh reloads the definitions once.
func (s *Service) Refresh(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	exps, err := s.store.latest(ctx)
	if err != nil {
		s.m.refreshes.WithLabelValues("error").Inc()
		return err
	}
	s.snap.Store(newSnapshot(exps))
	s.m.refreshes.WithLabelValues("ok").Inc()
	s.m.running.Set(float64(len(s.snap.Load().running)))
	return nil
}

// List returns every experiment, newest first.
func (s *Service) List() []Experiment {
	snap := s.snap.Load()
	out := make([]Experiment, 0, len(snap.all))
	for _, e := range snap.all {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Experiment) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Get returns an experiment by id.
func (s *Service) Get(id string) (Experiment, bool) {
	e, ok := s.snap.Load().all[id]
	if !ok {
		return Experiment{}, false
	}
	return *e, true
}

// History returns every version of an experiment, oldest first.
func (s *Service) History(ctx context.Context, id string) ([]Experiment, error) {
	return s.store.history(ctx, id)
}

// Create stores a new experiment as a draft, with the defaults filled in.
func (s *Service) Create(ctx context.Context, e Experiment, actor string) (Experiment, error) {
	e.applyDefaults(s.opts.DayLength)
	if err := e.Validate(); err != nil {
		return Experiment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, err := s.store.lastVersion(ctx, e.ID); err != nil {
		return Experiment{}, err
	} else if v > 0 {
		return Experiment{}, fmt.Errorf("%w: %q", ErrExists, e.ID)
	}
	now := s.opts.Now().UTC().Truncate(time.Second)
	e.Status, e.CreatedAt, e.StartedAt, e.StoppedAt, e.Winner, e.RuleVersions = StatusDraft, now, time.Time{}, time.Time{}, "", nil
	e.Version = 0
	return s.save(ctx, e, actor, "created")
}

// save appends the next version of e and publishes it to readers at once.
// The caller holds s.mu.
func (s *Service) save(ctx context.Context, e Experiment, actor, note string) (Experiment, error) {
	e.Version++
	e.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
	e.UpdatedBy = actor
	e.Note = note
	if err := s.store.put(ctx, e); err != nil {
		return Experiment{}, err
	}
	old := s.snap.Load()
	exps := make([]Experiment, 0, len(old.all)+1)
	for id, x := range old.all {
		if id != e.ID {
			exps = append(exps, *x)
		}
	}
	s.snap.Store(newSnapshot(append(exps, e)))
	s.m.running.Set(float64(len(s.snap.Load().running)))
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return e, nil
}

// current returns the freshest stored version of an experiment: the
// snapshot's, unless another replica wrote a newer one. The caller holds s.mu.
func (s *Service) current(ctx context.Context, id string) (Experiment, error) {
	e, ok := s.Get(id)
	last, err := s.store.lastVersion(ctx, id)
	if err != nil {
		return Experiment{}, err
	}
	if last == 0 {
		return Experiment{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if !ok || e.Version < last {
		hist, err := s.store.history(ctx, id)
		if err != nil {
			return Experiment{}, err
		}
		e = hist[len(hist)-1]
	}
	return e, nil
}

// Start moves a draft to running. It is refused when a running experiment
// of the same layer targets the same traffic, or when a variant's strategy
// gives an invalid rule for a targeted region and product.
func (s *Service) Start(ctx context.Context, id, actor string) (Experiment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.current(ctx, id)
	if err != nil {
		return Experiment{}, err
	}
	if e.Status != StatusDraft {
		return Experiment{}, fmt.Errorf("%w: %s is %s; only a DRAFT starts", ErrStatus, id, e.Status)
	}
	for _, o := range s.snap.Load().running {
		if o.ID != e.ID && e.overlaps(o) {
			return Experiment{}, fmt.Errorf("%w: %s (layer %q) shares regions and products with %s; use another layer or stop it first",
				ErrOverlap, id, e.Layer, o.ID)
		}
	}
	if err := s.checkStrategies(e); err != nil {
		return Experiment{}, err
	}
	e.Status, e.StartedAt = StatusRunning, s.opts.Now().UTC()
	return s.save(ctx, e, actor, "started")
}

// checkStrategies applies every variant's strategy to every targeted rule
// in force now.
func (s *Service) checkStrategies(e Experiment) error {
	if s.opts.Rules == nil {
		return errors.New("experiments: no pricing rules configured")
	}
	now := s.opts.Now()
	targeted := 0
	for _, r := range s.opts.Rules.Regions() {
		for _, p := range r.Products {
			if !e.Targets(r.ID, p) {
				continue
			}
			rule, ok := s.opts.Rules.Get(r.ID, p, now)
			if !ok {
				continue
			}
			targeted++
			for i, v := range e.Variants {
				if _, err := v.Strategy.Apply(rule); err != nil {
					return &FieldError{Field: fmt.Sprintf("variants[%d].strategy", i),
						Msg: fmt.Sprintf("gives an invalid rule for %s/%s: %v", r.ID, p, err)}
				}
			}
		}
	}
	if targeted == 0 {
		return &FieldError{Field: "regions", Msg: "the experiment targets no priced region and product"}
	}
	return nil
}

// Stop ends a running experiment (or abandons a draft): nobody is enrolled
// any more and every request is priced by the default rules again.
func (s *Service) Stop(ctx context.Context, id, reason, actor string) (Experiment, error) {
	if len(reason) > 500 {
		return Experiment{}, &FieldError{Field: "reason", Msg: "must be at most 500 characters"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.current(ctx, id)
	if err != nil {
		return Experiment{}, err
	}
	if e.Status != StatusRunning && e.Status != StatusDraft {
		return Experiment{}, fmt.Errorf("%w: %s is already %s", ErrStatus, id, e.Status)
	}
	e.Status, e.StoppedAt = StatusStopped, s.opts.Now().UTC()
	return s.save(ctx, e, actor, cmp.Or(reason, "stopped"))
}

// RollOut makes a variant's strategy the default: for every region and
// product the experiment targets, a new pricing-rule version with the
// strategy applied (the history of versions stays), then the experiment is
// stopped and recorded as rolled out with the versions written. Without a
// variant, the verdict's winner is rolled out, and the call is refused when
// the results name none.
func (s *Service) RollOut(ctx context.Context, id, variant, actor string) (Experiment, error) {
	if s.opts.Rules == nil {
		return Experiment{}, errors.New("experiments: no pricing rules configured")
	}
	if variant == "" {
		res, err := s.Results(ctx, []string{id})
		if err != nil {
			return Experiment{}, err
		}
		if res[0].Verdict != VerdictWinner {
			return Experiment{}, fmt.Errorf("%w: the verdict is %s (%s)", ErrNoWinner, res[0].Verdict, res[0].VerdictReason)
		}
		variant = res[0].Winner
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.current(ctx, id)
	if err != nil {
		return Experiment{}, err
	}
	if e.Status != StatusRunning && e.Status != StatusStopped {
		return Experiment{}, fmt.Errorf("%w: %s is %s; only a RUNNING or STOPPED experiment rolls out", ErrStatus, id, e.Status)
	}
	v, ok := e.Variant(variant)
	if !ok {
		return Experiment{}, &FieldError{Field: "variant", Msg: fmt.Sprintf("experiment %s has no variant %q", id, variant)}
	}
	// Build every new version before writing any, so that an invalid one
	// leaves nothing half rolled out.
	now := s.opts.Now()
	var next []pricing.Rule
	for _, r := range s.opts.Rules.Regions() {
		for _, p := range r.Products {
			rule, ok := s.opts.Rules.Get(r.ID, p, now)
			if !ok || !e.Targets(r.ID, p) {
				continue
			}
			nr, err := v.Strategy.Apply(rule)
			if err != nil {
				return Experiment{}, &FieldError{Field: "variant", Msg: fmt.Sprintf("gives an invalid rule for %s/%s: %v", r.ID, p, err)}
			}
			nr.EffectiveFrom = time.Time{} // now
			next = append(next, nr)
		}
	}
	var versions []string
	if !v.Strategy.IsDefault() {
		for _, nr := range next {
			stored, err := s.opts.Rules.Put(ctx, nr, actor+" (rollout of experiment "+id+", variant "+variant+")")
			if err != nil {
				return Experiment{}, fmt.Errorf("experiments: roll out %s/%s: %w (versions written before: %v)", nr.RegionID, nr.ProductType, err, versions)
			}
			versions = append(versions, fmt.Sprintf("%s/%s:%d", stored.RegionID, stored.ProductType, stored.Version))
		}
	}
	if e.StoppedAt.IsZero() {
		e.StoppedAt = s.opts.Now().UTC()
	}
	e.Status, e.Winner, e.RuleVersions = StatusRolledOut, variant, versions
	note := fmt.Sprintf("rolled out variant %s", variant)
	if len(versions) == 0 {
		note += " (prices like the default rules: no new rule version)"
	}
	return s.save(ctx, e, actor, note)
}

// Assign returns the variants a request is priced with: one per running
// experiment that targets the region and product, in layer order (a layer
// holds at most one such experiment). Requests without a user are not
// enrolled. It allocates only for the result.
func (s *Service) Assign(regionID, productType, userID string) []Assignment {
	if userID == "" {
		return nil
	}
	var out []Assignment
	for _, e := range s.snap.Load().running {
		if !e.Targets(regionID, productType) {
			continue
		}
		i := e.variantOf(Bucket(e.Salt, userID))
		out = append(out, Assignment{ExperimentID: e.ID, Variant: e.Variants[i].Name, Control: i == 0, Strategy: e.Variants[i].Strategy})
	}
	return out
}

// Exposure is one user priced with one variant: the record of the
// experiments topic.
type Exposure struct {
	ExperimentID string    `json:"experimentId"`
	Variant      string    `json:"variant"`
	UserHash     string    `json:"userHash"`
	RegionID     string    `json:"regionId"`
	ProductType  string    `json:"productType"`
	QuoteID      string    `json:"quoteId"`
	At           time.Time `json:"at"`
}

type exposureKey struct {
	experiment, user string
	day              int64
}

// Expose logs an exposure unless the same user was logged for the
// experiment on the same experiment day by this process. It never blocks.
func (s *Service) Expose(x Exposure) {
	if s.opts.Publisher == nil || x.UserHash == "" {
		return
	}
	e, ok := s.snap.Load().all[x.ExperimentID]
	if !ok {
		return
	}
	k := exposureKey{x.ExperimentID, x.UserHash, int64(x.At.Sub(e.StartedAt) / e.DayLength)}
	if ok, _ := s.seen.ContainsOrAdd(k, struct{}{}); ok {
		s.m.exposures.WithLabelValues("repeat").Inc()
		return
	}
	b, err := json.Marshal(x)
	if err != nil {
		return
	}
	if !s.opts.Publisher.Publish(Topic, x.RegionID, b) {
		s.m.exposures.WithLabelValues("dropped").Inc()
		s.seen.Remove(k) // logged by a later exposure of the day
		return
	}
	s.m.exposures.WithLabelValues("logged").Inc()
}

// DecodeExposure decodes a record of the experiments topic.
func DecodeExposure(b []byte) (Exposure, error) {
	var x Exposure
	err := json.Unmarshal(b, &x)
	return x, err
}

type metrics struct {
	refreshes *prometheus.CounterVec
	running   prometheus.Gauge
	exposures *prometheus.CounterVec
	results   prometheus.Histogram
	snapshots prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_experiments_refreshes_total", Help: "Reloads of the experiment definitions from ClickHouse, by result (ok, error).",
		}, []string{"result"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_experiments_running", Help: "Experiments running, as this process sees them.",
		}),
		exposures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_experiment_exposures_total", Help: "Assignments of users to variants, by outcome: logged (sent to Kafka), repeat (already logged that experiment day).",
		}, []string{"outcome"}),
		results: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "surge_experiment_results_duration_seconds", Help: "Duration of an experimentResults batch (read of the snapshots and statistics).",
			Buckets: prometheus.DefBuckets,
		}),
		snapshots: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "surge_experiment_results_refresh_duration_seconds", Help: "Duration of one experiment's results snapshot (per-user aggregation in ClickHouse).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.refreshes, m.running, m.exposures, m.results, m.snapshots} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("experiments: register metrics: %w", err)
		}
	}
	return nil
}
