package quotes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/encoding/json"

	"github.com/surgeworks/surge/auditrecord"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/pricing"
)

// snapshot is what one Redis round trip tells about a region.
type snapshot struct {
	features features.Values
	cached   *inference.Forecast
	surge    map[string]pricing.State // by stateKey.field
	err      error                    // the Redis read failed
}

func stateKeyOf(regionID string) string { return "smoothing:{" + regionID + "}" }

// SurgeChannel is the Redis pub/sub channel on which a region's multiplier
// changes are published (one JSON SurgeChange per message).
func SurgeChannel(regionID string) string { return "surge:{" + regionID + "}" }

// SurgeChange is published when the quoted multiplier of a product in a
// region moves.
type SurgeChange struct {
	RegionID    string  `json:"regionId"`
	ProductType string  `json:"productType"`
	Previous    float64 `json:"previous"`
	Multiplier  float64 `json:"multiplier"`
	// Demand is the forecast demand over the pricing horizon (nil when the
	// forecast was STATIC); Supply the available supply (nil when unknown).
	Demand  *float64  `json:"demand,omitempty"`
	Supply  *float64  `json:"supply,omitempty"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	QuoteID string    `json:"quoteId"`
}

// Change describes a quote as a surge change from previous.
func Change(q Quote, previous float64) SurgeChange {
	c := SurgeChange{RegionID: q.RegionID, ProductType: q.ProductType, Previous: previous, Multiplier: q.Multiplier,
		Reason: Reason(q.Factors), At: q.CreatedAt, QuoteID: q.ID}
	if q.Forecast.Known() {
		d := q.Forecast.Demand // copies: the quote itself need not outlive the change
		c.Demand = &d
	}
	if q.SupplyKnown {
		s := q.Supply
		c.Supply = &s
	}
	return c
}

// Reason names the factor that moved a multiplier most: the non-base factor
// with the largest contribution in absolute value, as "name: description";
// when none moved it, the first non-base factor (demand against supply),
// which says why.
func Reason(factors []pricing.Factor) string {
	best := -1
	for i, f := range factors {
		if f.Name == "base" {
			continue
		}
		if best < 0 || math.Abs(f.Contribution) > math.Abs(factors[best].Contribution) {
			best = i
		}
	}
	if best < 0 {
		return "base: no factor moved the multiplier"
	}
	return factors[best].Name + ": " + factors[best].Description
}

func quoteKey(id string) string { return "quote:{" + id + "}" }

func (s *Service) load(ctx context.Context, regions []string) map[string]snapshot {
	return s.loadHorizon(ctx, regions, s.opts.HorizonMinutes)
}

type snapKey struct {
	region  string
	horizon int
}

type cachedSnapshot struct {
	snapshot
	at time.Time
}

// loadHorizon returns the features, cached forecast and smoothing state of
// every region: from the in-process near cache when fresh (SnapshotTTL),
// else from Redis in one pipelined round trip for all the regions missing.
func (s *Service) loadHorizon(ctx context.Context, regions []string, horizon int) map[string]snapshot {
	out := make(map[string]snapshot, len(regions))
	now := time.Now()
	missing := regions
	if s.opts.SnapshotTTL > 0 {
		missing = missing[:0:0]
		for _, r := range regions {
			if c, ok := s.snaps.Load(snapKey{r, horizon}); ok && now.Sub(c.(cachedSnapshot).at) < s.opts.SnapshotTTL {
				out[r] = c.(cachedSnapshot).snapshot
				s.m.snapshotHits.WithLabelValues("hit").Inc()
				continue
			}
			missing = append(missing, r)
			s.m.snapshotHits.WithLabelValues("miss").Inc()
		}
		if len(missing) == 0 {
			return out
		}
	}
	for r, sn := range s.readRedis(ctx, missing, horizon) {
		out[r] = sn
		if s.opts.SnapshotTTL > 0 && sn.err == nil {
			s.snaps.Store(snapKey{r, horizon}, cachedSnapshot{sn, now})
		}
	}
	return out
}

// readRedis reads the snapshots of regions in one pipelined round trip.
func (s *Service) readRedis(ctx context.Context, regions []string, horizon int) map[string]snapshot {
	out := make(map[string]snapshot, len(regions))
	if s.rdb == nil {
		for _, r := range regions {
			out[r] = snapshot{err: errors.New("no online store configured")}
		}
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RedisTimeout)
	defer cancel()
	type pending struct {
		feats  func() (features.Values, error)
		cached func() (*inference.Forecast, error)
		surge  *redis.MapStringStringCmd
	}
	p := s.rdb.Pipeline()
	pend := make([]pending, len(regions))
	for i, r := range regions {
		pend[i] = pending{
			feats:  features.Queue(ctx, p, r),
			cached: inference.QueueCached(ctx, p, r, horizon),
			surge:  p.HGetAll(ctx, stateKeyOf(r)),
		}
	}
	start := time.Now()
	_, execErr := p.Exec(ctx)
	s.m.redisSeconds.Observe(time.Since(start).Seconds())
	if execErr != nil && !errors.Is(execErr, redis.Nil) {
		s.m.redisErrors.Inc()
	}
	// Each region by its own commands: on a Redis Cluster a failing node
	// fails only the regions of its slots.
	for i, r := range regions {
		var sn snapshot
		var ferr, cerr error
		sn.features, ferr = pend[i].feats()
		sn.cached, cerr = pend[i].cached()
		sn.surge = parseStates(pend[i].surge.Val())
		sn.err = cmp.Or(ferr, cerr, pend[i].surge.Err()) // the first: they share a cause
		if sn.features.Found() {
			s.m.featureHits.WithLabelValues("hit").Inc()
		} else {
			s.m.featureHits.WithLabelValues("miss").Inc()
		}
		out[r] = sn
	}
	return out
}

// A smoothing state is stored as "multiplier,unixMillis".
func formatState(st pricing.State) string {
	return strconv.FormatFloat(st.Multiplier, 'g', -1, 64) + "," + strconv.FormatInt(st.At.UnixMilli(), 10)
}

func parseStates(m map[string]string) map[string]pricing.State {
	out := make(map[string]pricing.State, len(m))
	for product, v := range m {
		a, b, ok := strings.Cut(v, ",")
		if !ok {
			continue
		}
		mult, err1 := strconv.ParseFloat(a, 64)
		ms, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out[product] = pricing.State{Multiplier: mult, At: time.UnixMilli(ms).UTC()}
	}
	return out
}

func getQuote(ctx context.Context, rdb redis.UniversalClient, id string) (Quote, error) {
	b, err := rdb.Get(ctx, quoteKey(id)).Bytes()
	if err != nil {
		return Quote{}, err
	}
	var d decision
	if err := auditrecord.Unmarshal(b, &d); err != nil {
		return Quote{}, fmt.Errorf("decode quote: %w", err)
	}
	return d.quote(), nil
}

// write is one background job of a quote.
type write struct {
	quote    *Quote
	decision []byte
	state    *stateWrite
	change   *SurgeChange
}

type stateWrite struct {
	key   stateKey
	state pricing.State
}

func (s *Service) enqueue(w write) {
	if s.rdb == nil {
		return
	}
	select {
	case s.writes <- w:
	default:
		s.m.writesDropped.Inc()
	}
}

// Run performs the background Redis writes until ctx ends: quotes are cached
// for their validity and smoothing states persisted, many per round trip
// (those of WriteDelay, up to 256).
func (s *Service) Run(ctx context.Context) error {
	batch := make([]write, 0, 256)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case w := <-s.writes:
			batch = append(batch[:0], w)
			if s.opts.WriteDelay > 0 {
				linger.Reset(s.opts.WriteDelay)
			}
		collect:
			for len(batch) < cap(batch) {
				if s.opts.WriteDelay <= 0 {
					select {
					case w := <-s.writes:
						batch = append(batch, w)
						continue
					default:
						break collect
					}
				}
				select {
				case w := <-s.writes:
					batch = append(batch, w)
				case <-linger.C:
					break collect
				case <-ctx.Done():
					break collect
				}
			}
			linger.Stop()
			s.flush(ctx, batch)
		}
	}
}

func (s *Service) flush(ctx context.Context, batch []write) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	p := s.rdb.Pipeline()
	states := map[stateKey]pricing.State{}
	for _, w := range batch {
		if w.quote != nil && w.decision != nil {
			p.Set(ctx, quoteKey(w.quote.ID), w.decision, s.opts.Validity)
		}
		if w.state != nil {
			if cur, ok := states[w.state.key]; !ok || w.state.state.At.After(cur.At) {
				states[w.state.key] = w.state.state
			}
		}
	}
	for _, w := range batch {
		if w.change != nil {
			b, _ := json.Marshal(w.change)
			p.Publish(ctx, SurgeChannel(w.change.RegionID), b)
		}
	}
	for k, st := range states {
		p.HSet(ctx, stateKeyOf(k.region), k.field(), formatState(st))
		p.Expire(ctx, stateKeyOf(k.region), 24*time.Hour)
	}
	if _, err := p.Exec(ctx); err != nil {
		s.m.redisErrors.Inc()
		s.opts.Logger.Debug("quote cache write failed", "n", len(batch), "err", err)
	}
}

// decision is the audit record of a quote: every input of the engine, so
// pricing.Compute on it gives the same price. The same bytes are the quote's
// cache record in Redis (one encoding per quote).
type decision struct {
	QuoteID      string             `json:"quoteId"`
	TraceID      string             `json:"traceId"`
	At           time.Time          `json:"at"`
	ValidUntil   time.Time          `json:"validUntil"`
	RegionID     string             `json:"regionId"`
	ProductType  string             `json:"productType"`
	UserHash     string             `json:"userHash,omitempty"`
	Input        pricing.Input      `json:"input"`
	Forecast     inference.Forecast `json:"forecast"`
	Features     features.Online    `json:"features,omitempty"`
	FeaturesAt   time.Time          `json:"featuresAt,omitzero"`
	RuleVersion  uint32             `json:"ruleVersion"`
	Experiments  []ExperimentRef    `json:"experiments,omitempty"`
	ModelVersion string             `json:"modelVersion,omitempty"`
	Multiplier   float64            `json:"surgeMultiplier"`
	Price        float64            `json:"price"`
	Currency     string             `json:"currency"`
	Factors      []pricing.Factor   `json:"factors"`
	Degraded     bool               `json:"degraded"`
	Warnings     []string           `json:"warnings,omitempty"`
	// EngineVersion is pricing.EngineVersion of the engine that priced it.
	EngineVersion string `json:"engineVersion"`
}

// quote rebuilds the quote a decision was made for.
func (d *decision) quote() Quote {
	return Quote{
		ID: d.QuoteID, TraceID: d.TraceID, RegionID: d.RegionID, ProductType: d.ProductType,
		Currency: d.Currency, BasePrice: d.Input.Rule.BasePrice, Multiplier: d.Multiplier, Price: d.Price,
		Factors: d.Factors, Forecast: d.Forecast, Supply: d.Input.Supply, SupplyKnown: d.Input.SupplyKnown,
		RuleVersion: d.RuleVersion, Experiments: d.Experiments, UserHash: d.UserHash, Degraded: d.Degraded, Warnings: d.Warnings,
		CreatedAt: d.At, ValidUntil: d.ValidUntil,
	}
}

func (s *Service) decision(q Quote, in pricing.Input, sn snapshot) ([]byte, error) {
	b, err := auditrecord.Marshal(decision{
		QuoteID: q.ID, TraceID: q.TraceID, At: q.CreatedAt, ValidUntil: q.ValidUntil, RegionID: q.RegionID, ProductType: q.ProductType,
		UserHash: q.UserHash, Input: in, Forecast: q.Forecast, Features: sn.features.Online, FeaturesAt: sn.features.UpdatedAt,
		RuleVersion: q.RuleVersion, Experiments: q.Experiments, ModelVersion: q.Forecast.ModelVersion,
		Multiplier: q.Multiplier, Price: q.Price, Currency: q.Currency, Factors: q.Factors,
		Degraded: q.Degraded, Warnings: q.Warnings, EngineVersion: pricing.EngineVersion,
	})
	if err != nil {
		s.opts.Logger.Error("encode audit record", "quote", q.ID, "err", err)
		return nil, fmt.Errorf("encode the audit record of quote %s: %w", q.ID, err)
	}
	return b, nil
}

type metrics struct {
	quotes        *prometheus.CounterVec
	snapshotHits  *prometheus.CounterVec
	lookups       *prometheus.CounterVec
	featureHits   *prometheus.CounterVec
	redisSeconds  prometheus.Histogram
	redisErrors   prometheus.Counter
	writesDropped prometheus.Counter
	auditRefused  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		quotes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_quotes_total", Help: "Quotes given, by the forecast source they used.",
		}, []string{"forecast_source"}),
		snapshotHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_region_snapshot_cache_total", Help: "Region snapshot look-ups in the in-process near cache, by result: hit, miss.",
		}, []string{"result"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_quote_lookups_total", Help: "Quote look-ups (factorBreakdown) by where they were found: local, redis, miss, error.",
		}, []string{"result"}),
		featureHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_online_features_lookups_total", Help: "Online feature reads by result: hit, miss.",
		}, []string{"result"}),
		redisSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "surge_quote_redis_read_duration_seconds", Help: "Duration of the batched Redis read of a quote request.",
			Buckets: []float64{.0001, .0002, .0005, .001, .002, .005, .01, .025, .05},
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_quote_redis_errors_total", Help: "Failed Redis round trips of the quote service (reads and background writes).",
		}),
		writesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_quote_writes_dropped_total", Help: "Background quote writes dropped because the queue was full.",
		}),
		auditRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_quotes_refused_unaudited_total", Help: "Quotes refused because their audit record could not be queued (the publish buffer was full).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.quotes, m.snapshotHits, m.lookups, m.featureHits, m.redisSeconds, m.redisErrors, m.writesDropped, m.auditRefused)
	}
	return m
}
