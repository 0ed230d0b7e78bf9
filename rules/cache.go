package rules

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/pricing"
)

// CacheOptions configures a Cache. The zero value is ready to use.
type CacheOptions struct {
	// Interval between refreshes. Default 10 s.
	Interval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the cache's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Region is a priced region as the cache currently sees it.
type Region struct {
	ID       string
	Name     string
	Currency string
	Products []string // sorted
}

// Cache serves pricing rules from memory. While Run runs it reloads, every
// Interval and right after each Put made through it, the current version of
// every (region, product) and the versions scheduled after it, so that a
// pending version takes over at its EffectiveFrom without a reload. When a
// reload fails (ClickHouse down) it keeps serving the last good set, counts
// the failure and logs it. Reads take no lock. It is safe for concurrent use.
type Cache struct {
	store *Store
	opts  CacheOptions
	snap  atomic.Pointer[ruleSnapshot]
	mu    sync.Mutex // serialises snapshot writers and guards puts
	kick  chan struct{}
	// puts are the versions stored through Put since the start of the
	// last completed reload: a reload that started before such a Put
	// finished may miss it, so they are merged into what it loaded.
	puts []localPut

	refreshes   *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	versions    prometheus.Gauge
}

// ruleSnapshot is immutable once published.
type localPut struct {
	rule pricing.Rule
	at   time.Time // when the insert had completed
}

type ruleSnapshot struct {
	// rules holds per key the current version and the pending ones, newest
	// version first.
	rules    map[key][]pricing.Rule
	loadedAt time.Time
}

// NewCache returns a cache over store. It holds nothing until the first
// successful refresh (Run does one at once; Refresh does one on demand).
func NewCache(store *Store, opts CacheOptions) (*Cache, error) {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Cache{
		store: store,
		opts:  opts,
		kick:  make(chan struct{}, 1),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_rules_cache_refreshes_total",
			Help: "Reloads of the pricing rules from ClickHouse, by result (ok, error).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_rules_cache_last_success_timestamp_seconds",
			Help: "Unix time of the last successful reload of the pricing rules.",
		}),
		versions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_rules_cache_versions",
			Help: "Rule versions in memory (current and pending).",
		}),
	}
	if opts.Registerer != nil {
		for _, m := range []prometheus.Collector{c.refreshes, c.lastSuccess, c.versions} {
			if err := opts.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("rules: register cache metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Run reloads at once, then every Interval and after each Put, until ctx
// ends; it returns nil then. Failures are logged and counted, never fatal.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.opts.Logger.Warn("pricing rules reload failed; serving the last good set",
				"err", err, "loaded", c.Loaded(), "loaded_at", c.LoadedAt())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.kick:
		}
	}
}

// Refresh reloads the rules once; on failure the previous set stays.
func (c *Cache) Refresh(ctx context.Context) error {
	at := time.Now()
	current, err := c.store.Current(ctx, at)
	var pending []pricing.Rule
	if err == nil {
		pending, err = c.store.pendingAfter(ctx, at, current)
	}
	if err != nil {
		c.refreshes.WithLabelValues("error").Inc()
		return fmt.Errorf("rules: reload cache: %w", err)
	}
	rules := make(map[key][]pricing.Rule, len(current))
	for _, r := range slices.Concat(current, pending) {
		rules[keyOf(r)] = append(rules[keyOf(r)], r)
	}
	n := 0
	for _, vs := range rules {
		slices.SortFunc(vs, func(a, b pricing.Rule) int { return cmp.Compare(b.Version, a.Version) })
		n += len(vs)
	}
	c.mu.Lock()
	// Puts that completed before the queries started are in the result.
	c.puts = slices.DeleteFunc(c.puts, func(p localPut) bool { return p.at.Before(at) })
	for _, p := range c.puts {
		rules[keyOf(p.rule)] = merge(rules[keyOf(p.rule)], p.rule)
	}
	c.snap.Store(&ruleSnapshot{rules: rules, loadedAt: at})
	c.mu.Unlock()
	c.refreshes.WithLabelValues("ok").Inc()
	c.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	c.versions.Set(float64(n))
	return nil
}

// Put stores r through the Store, makes the new version visible to Get at
// once, and asks Run for a full reload.
func (c *Cache) Put(ctx context.Context, r pricing.Rule, actor string) (pricing.Rule, error) {
	stored, err := c.store.Put(ctx, r, actor)
	if err != nil {
		return pricing.Rule{}, err
	}
	c.mu.Lock()
	c.puts = append(c.puts, localPut{rule: stored, at: time.Now()})
	old := c.snap.Load()
	next := &ruleSnapshot{rules: map[key][]pricing.Rule{}}
	if old != nil {
		next.rules = maps.Clone(old.rules)
		next.loadedAt = old.loadedAt
	}
	next.rules[keyOf(stored)] = merge(next.rules[keyOf(stored)], stored)
	c.snap.Store(next)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return stored, nil
}

// merge returns a new slice holding vs (newest version first) and r, unless
// r's version is already there, without the versions older than the newest
// one already in force, which can no longer be returned.
func merge(vs []pricing.Rule, r pricing.Rule) []pricing.Rule {
	if slices.ContainsFunc(vs, func(v pricing.Rule) bool { return v.Version == r.Version }) {
		return vs
	}
	out := append(slices.Clone(vs), r)
	slices.SortFunc(out, func(a, b pricing.Rule) int { return cmp.Compare(b.Version, a.Version) })
	now := time.Now()
	for i, v := range out {
		if !v.EffectiveFrom.After(now) {
			return out[:i+1]
		}
	}
	return out
}

// Get returns the rule in force for (region, product) at at: the highest
// loaded version whose EffectiveFrom is not after at. at is meant to be
// about now: versions superseded before the last reload are not kept.
func (c *Cache) Get(regionID, productType string, at time.Time) (pricing.Rule, bool) {
	return c.snap.Load().get(key{regionID, productType}, at)
}

func (s *ruleSnapshot) get(k key, at time.Time) (pricing.Rule, bool) {
	if s == nil {
		return pricing.Rule{}, false
	}
	for _, r := range s.rules[k] {
		if !r.EffectiveFrom.After(at) {
			return r, true
		}
	}
	return pricing.Rule{}, false
}

// Regions lists the regions having at least one product with a rule in
// force now, sorted by id. Name and currency come from the region's most
// recently effective rule.
func (c *Cache) Regions() []Region {
	s := c.snap.Load()
	if s == nil {
		return nil
	}
	now := time.Now()
	type acc struct {
		r       Region
		latest  time.Time
		product string // of the rule giving name and currency
	}
	byID := map[string]*acc{}
	for k := range s.rules {
		r, ok := s.get(k, now)
		if !ok {
			continue
		}
		a := byID[k.region]
		if a == nil {
			a = &acc{r: Region{ID: k.region}}
			byID[k.region] = a
		}
		a.r.Products = append(a.r.Products, k.product)
		if a.product == "" || r.EffectiveFrom.After(a.latest) ||
			(r.EffectiveFrom.Equal(a.latest) && r.ProductType < a.product) {
			a.latest, a.product, a.r.Name, a.r.Currency = r.EffectiveFrom, r.ProductType, r.RegionName, r.Currency
		}
	}
	out := make([]Region, 0, len(byID))
	for _, a := range byID {
		slices.Sort(a.r.Products)
		out = append(out, a.r)
	}
	slices.SortFunc(out, func(a, b Region) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Loaded reports whether a reload has succeeded at least once.
func (c *Cache) Loaded() bool {
	s := c.snap.Load()
	return s != nil && !s.loadedAt.IsZero()
}

// LoadedAt is the time of the last successful reload (zero before).
func (c *Cache) LoadedAt() time.Time {
	if s := c.snap.Load(); s != nil {
		return s.loadedAt
	}
	return time.Time{}
}
