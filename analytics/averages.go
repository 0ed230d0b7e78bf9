package analytics

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/retry"
)

// AveragesOptions configures HistoricalAverages. The zero value is ready to
// use.
type AveragesOptions struct {
	// Interval between refreshes after a success. Default 10 minutes.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after a failed refresh
	// (doubling, with jitter). Defaults 1 s and 1 minute; MaxBackoff is capped
	// at Interval.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the cache's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// HistoricalAverages keeps the hour-of-week demand profiles of every region
// in memory and refreshes them from ClickHouse while Run runs. A failed
// refresh keeps the last good data. Lookup and Index read an immutable
// snapshot through an atomic pointer: they take no lock and allocate nothing.
// It is safe for concurrent use.
type HistoricalAverages struct {
	history *History
	opts    AveragesOptions
	snap    atomic.Pointer[averagesSnapshot]

	refreshes   *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	regions     prometheus.Gauge
}

type averagesSnapshot struct {
	regions  map[string]*RegionWeek
	loadedAt time.Time
}

// NewHistoricalAverages returns a cache over h. It holds no data until the
// first successful Refresh (Run does one at once).
func NewHistoricalAverages(h *History, opts AveragesOptions) (*HistoricalAverages, error) {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Minute
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	opts.MaxBackoff = min(opts.MaxBackoff, opts.Interval)
	opts.MinBackoff = min(opts.MinBackoff, opts.MaxBackoff)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &HistoricalAverages{
		history: h,
		opts:    opts,
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_historical_averages_refreshes_total",
			Help: "Refreshes of the hour-of-week demand averages from ClickHouse, by result (ok, error).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_historical_averages_last_success_timestamp_seconds",
			Help: "Unix time of the last successful refresh of the hour-of-week demand averages.",
		}),
		regions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_historical_averages_regions",
			Help: "Regions with hour-of-week demand averages in memory.",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{a.refreshes, a.lastSuccess, a.regions} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("analytics: register historical averages metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Run refreshes at once and then every Interval until ctx ends; after a
// failure it retries with backoff, serving the previous data meanwhile. It
// returns nil when ctx ends.
func (a *HistoricalAverages) Run(ctx context.Context) error {
	refresh := retry.Forever[any](ctx, retry.Options{
		MinBackoff: a.opts.MinBackoff, MaxBackoff: a.opts.MaxBackoff, Jitter: 0.5,
		OnRetry: func(err error, delay time.Duration) {
			a.opts.Logger.Warn("historical averages refresh failed; serving the last good data",
				"err", err, "retry_in", delay, "loaded", a.Loaded())
		},
	})
	for {
		if err := refresh.Run(func() error { return a.Refresh(ctx) }); err != nil {
			return nil // ctx ended
		}
		t := time.NewTimer(a.opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Refresh loads the profiles once and, on success, replaces the snapshot.
func (a *HistoricalAverages) Refresh(ctx context.Context) error {
	regions, err := a.history.HourOfWeekProfiles(ctx)
	if err != nil {
		a.refreshes.WithLabelValues("error").Inc()
		return err
	}
	now := time.Now()
	a.snap.Store(&averagesSnapshot{regions: regions, loadedAt: now})
	a.refreshes.WithLabelValues("ok").Inc()
	a.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	a.regions.Set(float64(len(regions)))
	return nil
}

// Loaded reports whether a refresh has succeeded at least once.
func (a *HistoricalAverages) Loaded() bool { return a.snap.Load() != nil }

// LoadedAt is the time of the last successful refresh (zero before).
func (a *HistoricalAverages) LoadedAt() time.Time {
	if s := a.snap.Load(); s != nil {
		return s.loadedAt
	}
	return time.Time{}
}

// Lookup returns the mean searches per minute of the region in the
// hour-of-week slot of at. ok is false when the region is unknown or its
// history does not cover that slot.
func (a *HistoricalAverages) Lookup(regionID string, at time.Time) (perMinute float64, ok bool) {
	w := a.region(regionID)
	if w == nil {
		return 0, false
	}
	i := HourOfWeek(at)
	if w.Minutes[i] == 0 {
		return 0, false
	}
	return w.PerMinute[i], true
}

// Index returns the seasonality index of the region at at: the slot's mean
// searches per minute over the region's overall mean (1 = an average hour).
// ok is false when Lookup's is, or when the region had no searches at all.
func (a *HistoricalAverages) Index(regionID string, at time.Time) (index float64, ok bool) {
	w := a.region(regionID)
	if w == nil || w.Mean <= 0 {
		return 0, false
	}
	i := HourOfWeek(at)
	if w.Minutes[i] == 0 {
		return 0, false
	}
	return w.PerMinute[i] / w.Mean, true
}

func (a *HistoricalAverages) region(regionID string) *RegionWeek {
	s := a.snap.Load()
	if s == nil {
		return nil
	}
	return s.regions[regionID]
}
