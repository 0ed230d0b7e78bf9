package quotes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/inference"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/rules"
	"github.com/surgeworks/surge/userhash"
)

// Request asks for the price of a product in a region.
type Request struct {
	RegionID    string
	ProductType string
	UserID      string // optional; only its keyed hash is stored
	TraceID     string // optional; one is made when empty
}

// Quote is a price given to a client, with everything needed to explain and
// reproduce it.
type Quote struct {
	ID          string             `json:"quoteId"`
	TraceID     string             `json:"traceId"`
	RegionID    string             `json:"regionId"`
	ProductType string             `json:"productType"`
	Currency    string             `json:"currency"`
	BasePrice   float64            `json:"basePrice"`
	Multiplier  float64            `json:"surgeMultiplier"`
	Price       float64            `json:"price"`
	Factors     []pricing.Factor   `json:"factors"`
	Forecast    inference.Forecast `json:"forecast"`
	Supply      float64            `json:"supply"`
	SupplyKnown bool               `json:"supplyKnown"`
	RuleVersion uint32             `json:"ruleVersion"`
	// Experiments are the variants the quote was priced with (the rule
	// above is the rule with their strategies applied).
	Experiments []ExperimentRef `json:"experiments,omitempty"`
	// UserHash is the keyed hash of the request's user ("" without one).
	UserHash   string    `json:"-"`
	Degraded   bool      `json:"degraded"`
	Warnings   []string  `json:"warnings"`
	CreatedAt  time.Time `json:"createdAt"`
	ValidUntil time.Time `json:"validUntil"`
}

// ExperimentRef names an experiment and the variant a quote was priced with.
type ExperimentRef struct {
	ID      string `json:"id"`
	Variant string `json:"variant"`
}

// Experiments assigns users to pricing experiments and logs the exposures;
// experiments.Service implements it.
type Experiments interface {
	Assign(regionID, productType, userID string) []experiments.Assignment
	Expose(experiments.Exposure)
}

// Rules gives the pricing rule in force; rules.Cache implements it.
type Rules interface {
	Get(regionID, productType string, at time.Time) (pricing.Rule, bool)
	Region(regionID string) (rules.Region, bool)
}

// Publisher sends audit records; it must not block (publish.Publisher
// queues). It reports false when it cannot take the record (its buffer is
// full): the quote is then refused rather than answered unaudited.
type Publisher interface {
	Publish(topic, key string, value []byte) bool
}

// DecisionStore reads the audit trail (analytics.Decisions): the decision
// record of a quote, an error wrapping analytics.ErrDecisionNotFound when
// it has none.
type DecisionStore interface {
	DecisionByQuote(ctx context.Context, quoteID string) ([]byte, error)
}

// AuditTopic is the Kafka topic of pricing decisions.
const AuditTopic = "pricing-decisions"

// Options configures a Service. Zero values take the defaults.
type Options struct {
	// HorizonMinutes is the forecast horizon a price is based on (default 15).
	HorizonMinutes int
	// Validity is how long a quote stays valid and cached (default 60 s).
	Validity time.Duration
	// RedisTimeout bounds the batched Redis read of a request (default 25 ms).
	RedisTimeout time.Duration
	// SnapshotTTL is how long a region's Redis snapshot (features, cached
	// forecast, smoothing state) is reused in process before it is read
	// again (default 250 ms; negative: read on every request). Features
	// change at most once a second, so this bounds staleness, not accuracy.
	SnapshotTTL time.Duration
	// WriteDelay is how long the background Redis writes (quote cache,
	// smoothing state, surge changes) wait to share a round trip (default
	// 5 ms; negative: none). A quote is in the local cache at once.
	WriteDelay time.Duration
	// LocalQuotes is how many recent quotes are kept in process for
	// factorBreakdown when Redis is unreachable (default 20,000).
	LocalQuotes int
	// UserHashKey keys the hash that replaces user ids (default: random per process).
	UserHashKey []byte
	// Decisions is where Audit finds the records of quotes that left the
	// cache (nil: only quotes still cached are audited).
	Decisions DecisionStore
	// Experiments enrols requests with a user in the running pricing
	// experiments (nil: none).
	Experiments Experiments
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.HorizonMinutes <= 0 {
		o.HorizonMinutes = 15
	}
	if o.Validity <= 0 {
		o.Validity = 60 * time.Second
	}
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = 25 * time.Millisecond
	}
	if o.SnapshotTTL == 0 {
		o.SnapshotTTL = 250 * time.Millisecond
	}
	if o.WriteDelay == 0 {
		o.WriteDelay = 5 * time.Millisecond
	}
	if o.LocalQuotes <= 0 {
		o.LocalQuotes = 20_000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Service computes quotes. It is safe for concurrent use; Run performs the
// background writes (quote cache, smoothing state) until its context ends.
type Service struct {
	opts       Options
	rules      Rules
	rdb        redis.UniversalClient // may be nil
	forecaster *inference.Forecaster
	audit      Publisher // may be nil

	mu     sync.Mutex
	states map[stateKey]pricing.State // smoothing state, authoritative in process
	quoted map[stateKey]float64       // last quoted multiplier, to publish changes

	users  *userhash.Hasher
	recent *lru.LRU[string, Quote]
	snaps  sync.Map // snapKey → cachedSnapshot
	writes chan write
	m      *metrics
}

// stateKey names a smoothing state: a region's product, priced by the
// default rule (variant "") or by experiment variants whose strategies
// change the price (each keeps its own state, so variants do not drag each
// other's multipliers).
type stateKey struct{ region, product, variant string }

// field is the key's field in the smoothing hash of its region.
func (k stateKey) field() string {
	if k.variant == "" {
		return k.product
	}
	return k.product + "|" + k.variant
}

// New returns a quote service. rdb and audit may be nil.
func New(r Rules, rdb redis.UniversalClient, fc *inference.Forecaster, audit Publisher, opts Options) *Service {
	opts.defaults()
	return &Service{
		opts:       opts,
		rules:      r,
		rdb:        rdb,
		forecaster: fc,
		audit:      audit,
		states:     make(map[stateKey]pricing.State),
		quoted:     make(map[stateKey]float64),
		users:      userhash.New(opts.UserHashKey),
		recent:     lru.NewLRU[string, Quote](opts.LocalQuotes, nil, opts.Validity),
		writes:     make(chan write, 8192),
		m:          newMetrics(opts.Registerer),
	}
}

// HorizonMinutes is the forecast horizon prices are based on.
func (s *Service) HorizonMinutes() int { return s.opts.HorizonMinutes }

// Quote prices one request.
func (s *Service) Quote(ctx context.Context, req Request) (Quote, error) {
	qs, errs := s.QuoteBatch(ctx, []Request{req})
	return qs[0], errs[0]
}

// QuoteBatch prices many requests with one Redis round trip and one model
// call. errs[i] is set (and quotes[i] zero) for a request with bad input; a
// failing dependency never makes an error, only a degraded quote.
func (s *Service) QuoteBatch(ctx context.Context, reqs []Request) (quotes []Quote, errs []error) {
	now := s.opts.Now().UTC()
	quotes = make([]Quote, len(reqs))
	errs = make([]error, len(reqs))
	ruleOf := make([]pricing.Rule, len(reqs))
	var regions []string
	seen := map[string]bool{}
	for i, r := range reqs {
		rule, err := s.resolve(r, now)
		if err != nil {
			errs[i] = err
			continue
		}
		ruleOf[i] = rule
		if !seen[r.RegionID] {
			seen[r.RegionID] = true
			regions = append(regions, r.RegionID)
		}
	}
	if len(regions) == 0 {
		return quotes, errs
	}
	snaps := s.load(ctx, regions)
	freqs := make([]inference.Request, len(regions))
	for i, region := range regions {
		sn := snaps[region]
		freqs[i] = inference.Request{
			RegionID: region, HorizonMinutes: s.opts.HorizonMinutes, At: now,
			Features: sn.features, FeaturesErr: sn.err, Cached: sn.cached,
		}
	}
	fcs := s.forecaster.ForecastBatch(ctx, freqs)
	fcOf := make(map[string]inference.Forecast, len(regions))
	for i, region := range regions {
		fcOf[region] = fcs[i]
	}
	for i, r := range reqs {
		if errs[i] != nil {
			continue
		}
		quotes[i], errs[i] = s.price(r, ruleOf[i], snaps[r.RegionID], fcOf[r.RegionID], now)
	}
	return quotes, errs
}

// resolve validates a request and finds its rule.
func (s *Service) resolve(r Request, at time.Time) (pricing.Rule, error) {
	if err := ValidateID("regionId", r.RegionID); err != nil {
		return pricing.Rule{}, err
	}
	if err := ValidateID("productType", r.ProductType); err != nil {
		return pricing.Rule{}, err
	}
	if len(r.UserID) > 128 {
		return pricing.Rule{}, &InputError{Field: "userId", Msg: "must be at most 128 characters", Err: ErrInvalidInput}
	}
	region, ok := s.rules.Region(r.RegionID)
	if !ok {
		return pricing.Rule{}, &InputError{Field: "regionId", Msg: fmt.Sprintf("region %q is not priced here", r.RegionID), Err: ErrUnknownRegion}
	}
	rule, ok := s.rules.Get(r.RegionID, r.ProductType, at)
	if !ok {
		return pricing.Rule{}, &InputError{Field: "productType",
			Msg: fmt.Sprintf("product %q is not priced in %s (known: %s)", r.ProductType, r.RegionID, strings.Join(region.Products, ", ")),
			Err: ErrUnknownProduct}
	}
	return rule, nil
}

// ValidateID checks an identifier argument: 1 to 64 characters of letters,
// digits, '-', '_' and '.'.
func ValidateID(field, id string) error {
	if id == "" {
		return &InputError{Field: field, Msg: "must not be empty", Err: ErrInvalidInput}
	}
	if len(id) > 64 {
		return &InputError{Field: field, Msg: "must be at most 64 characters", Err: ErrInvalidInput}
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return &InputError{Field: field, Msg: "may hold only letters, digits, '-', '_' and '.'", Err: ErrInvalidInput}
		}
	}
	return nil
}

func (s *Service) price(r Request, rule pricing.Rule, sn snapshot, fc inference.Forecast, now time.Time) (Quote, error) {
	var assigned []experiments.Assignment
	var refs []ExperimentRef
	var variant strings.Builder
	if s.opts.Experiments != nil {
		for _, a := range s.opts.Experiments.Assign(r.RegionID, r.ProductType, r.UserID) {
			if !a.Strategy.IsDefault() {
				nr, err := a.Strategy.Apply(rule)
				if err != nil {
					// The rule changed since the experiment started: the
					// request is not enrolled rather than priced wrongly.
					s.opts.Logger.Debug("experiment strategy gives an invalid rule; not enrolled", "experiment", a.ExperimentID, "variant", a.Variant, "err", err)
					continue
				}
				rule = nr
				fmt.Fprintf(&variant, "%s/%s;", a.ExperimentID, a.Variant)
			}
			assigned = append(assigned, a)
			refs = append(refs, ExperimentRef{ID: a.ExperimentID, Variant: a.Variant})
		}
	}
	key := stateKey{r.RegionID, r.ProductType, variant.String()}
	s.mu.Lock()
	prev, havePrev := s.states[key]
	if st, ok := sn.surge[key.field()]; ok && (!havePrev || st.At.After(prev.At)) {
		prev, havePrev = st, true
	}
	s.mu.Unlock()

	// Non-finite signals never reach the engine (nor the audit record,
	// whose JSON could not hold them): they count as unknown. The feature
	// store leaves such values out when it reads them.
	var refused []string
	if bad := sn.features.Invalid; len(bad) > 0 {
		refused = append(refused, fmt.Sprintf("feature values not a number (%s); priced without them", strings.Join(bad, ", ")))
	}
	// The streaming consumer's supply_current includes the minute under way;
	// supply is the last closed minute's (the demo writer sets only that).
	supply, supplyKnown := sn.features.Online[features.SupplyCurrent]
	if !supplyKnown {
		supply, supplyKnown = sn.features.Online[features.Supply]
	}
	if fc.Known() && !(finite(fc.Demand) && finite(fc.Lower) && finite(fc.Upper)) {
		refused = append(refused, fmt.Sprintf("forecast %v (%v to %v) is not a number; priced without it", fc.Demand, fc.Lower, fc.Upper))
		fc.Source, fc.Demand, fc.Lower, fc.Upper = inference.SourceStatic, 0, 0, 0
	}
	in := pricing.Input{
		Rule:           rule,
		DemandForecast: fc.Demand,
		HorizonMinutes: fc.HorizonMinutes,
		DemandUnknown:  !fc.Known(),
		Supply:         supply,
		SupplyKnown:    supplyKnown,
		At:             now,
	}
	if havePrev && finite(prev.Multiplier) {
		in.Previous = &prev
	}
	pq, err := pricing.Compute(in)
	if err != nil {
		// Rules are validated when written, so this is a broken rule row.
		return Quote{}, fmt.Errorf("price %s/%s with rule v%d: %w", r.RegionID, r.ProductType, rule.Version, err)
	}

	s.mu.Lock()
	if cur, ok := s.states[key]; !ok || !cur.At.After(pq.State.At) {
		s.states[key] = pq.State
	}
	var last float64
	var quotedBefore bool
	if key.variant == "" { // surge changes are the default pricing's
		last, quotedBefore = s.quoted[key]
		s.quoted[key] = pq.Multiplier
	}
	s.mu.Unlock()

	traceID := r.TraceID
	if traceID == "" {
		traceID = NewTraceID()
	}
	q := Quote{
		ID:          uuid.Must(uuid.NewV7()).String(),
		TraceID:     traceID,
		RegionID:    r.RegionID,
		ProductType: r.ProductType,
		Currency:    rule.Currency,
		BasePrice:   pq.BasePrice,
		Multiplier:  pq.Multiplier,
		Price:       pq.Price,
		Factors:     pq.Factors,
		Forecast:    fc,
		Supply:      supply,
		SupplyKnown: supplyKnown,
		RuleVersion: rule.Version,
		Experiments: refs,
		UserHash:    s.users.Hash(r.UserID),
		CreatedAt:   now,
		ValidUntil:  now.Add(s.opts.Validity),
		Warnings:    append([]string(nil), fc.Warnings...),
	}
	if sn.err != nil {
		q.Warnings = append(q.Warnings, "online store unavailable: "+sn.err.Error())
	}
	q.Warnings = append(q.Warnings, refused...)
	q.Degraded = len(q.Warnings) > 0 || fc.Degraded()
	// The audit record is queued before the answer exists: a quote that
	// cannot be audited is not given.
	rec, err := s.decision(q, in, sn)
	if err != nil {
		return Quote{}, err
	}
	if s.audit != nil && !s.audit.Publish(AuditTopic, q.RegionID, rec) {
		s.m.auditRefused.Inc()
		return Quote{}, ErrAuditUnavailable
	}
	s.m.quotes.WithLabelValues(string(fc.Source)).Inc()
	s.recent.Add(q.ID, q)
	for _, a := range assigned {
		s.opts.Experiments.Expose(experiments.Exposure{ExperimentID: a.ExperimentID, Variant: a.Variant, UserHash: q.UserHash,
			RegionID: q.RegionID, ProductType: q.ProductType, QuoteID: q.ID, At: now})
	}
	w := write{quote: &q, decision: rec, state: &stateWrite{key: key, state: pq.State}}
	// Only the default strategy's multiplier is the region's surge: an
	// experiment variant's is not published.
	if quotedBefore && last != pq.Multiplier && key.variant == "" {
		c := Change(q, last)
		w.change = &c
	}
	s.enqueue(w)
	return q, nil
}

// NewTraceID returns a random W3C trace id (32 hex digits).
func NewTraceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// UserHash is the keyed hash that replaces a user id in quotes, audit
// records and events ("" for no user).
func (s *Service) UserHash(id string) string { return s.users.Hash(id) }

// Lookup returns a quote given earlier while it is valid.
func (s *Service) Lookup(ctx context.Context, quoteID string) (Quote, error) {
	if quoteID == "" || len(quoteID) > 64 {
		return Quote{}, &InputError{Field: "quoteId", Msg: "must be 1 to 64 characters", Err: ErrInvalidInput}
	}
	now := s.opts.Now()
	if q, ok := s.recent.Get(quoteID); ok && now.Before(q.ValidUntil) {
		s.m.lookups.WithLabelValues("local").Inc()
		return q, nil
	}
	if s.rdb != nil {
		ctx, cancel := context.WithTimeout(ctx, 10*s.opts.RedisTimeout)
		defer cancel()
		q, err := getQuote(ctx, s.rdb, quoteID)
		switch {
		case err == nil && now.Before(q.ValidUntil):
			s.m.lookups.WithLabelValues("redis").Inc()
			return q, nil
		case err != nil && !errors.Is(err, redis.Nil):
			s.m.lookups.WithLabelValues("error").Inc()
			return Quote{}, fmt.Errorf("look up quote %s: %w", quoteID, err)
		}
	}
	s.m.lookups.WithLabelValues("miss").Inc()
	return Quote{}, &InputError{Field: "quoteId", Msg: fmt.Sprintf("quote %q not found or expired", quoteID), Err: ErrQuoteNotFound}
}

// Forecast serves a region's forecast for a horizon (1 to 1440 minutes).
func (s *Service) Forecast(ctx context.Context, regionID string, horizon int) (inference.Forecast, error) {
	if err := ValidateID("regionId", regionID); err != nil {
		return inference.Forecast{}, err
	}
	if horizon < 1 || horizon > MaxHorizonMinutes {
		return inference.Forecast{}, &InputError{Field: "horizonMinutes", Msg: fmt.Sprintf("must be between 1 and %d", MaxHorizonMinutes), Err: ErrInvalidInput}
	}
	if _, ok := s.rules.Region(regionID); !ok {
		return inference.Forecast{}, &InputError{Field: "regionId", Msg: fmt.Sprintf("region %q is not priced here", regionID), Err: ErrUnknownRegion}
	}
	now := s.opts.Now().UTC()
	sn := s.loadHorizon(ctx, []string{regionID}, horizon)[regionID]
	return s.forecaster.Forecast(ctx, inference.Request{
		RegionID: regionID, HorizonMinutes: horizon, At: now,
		Features: sn.features, FeaturesErr: sn.err, Cached: sn.cached,
	}), nil
}

// MaxHorizonMinutes is the longest forecast horizon served: a day, the
// longest horizon long-memory models are trained for.
const MaxHorizonMinutes = 1440

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
