// Package monitoring watches the accuracy of the served demand forecasts:
// it joins the forecasts recorded in the audit trail (ClickHouse table
// pricing_decisions, source MODEL only) with the demand realised over their
// horizon (table demand_minute) once that horizon is complete, and reports
// MAPE, WAPE and bias per region and model version over a rolling window —
// as an answer to a query (Accuracy.Compute), as the rollout controller's
// rollout.AccuracySource (Accuracy.MAPE), and as Prometheus gauges with an
// alert per region refreshed by Accuracy.Run.
//
// The join is made in Go over two aggregated reads (the forecasts averaged
// per region, model version, horizon and minute; the searches per region
// and minute), since ClickHouse 18.16 has no range joins.
package monitoring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/validation"
)

// Defaults of Options.
const (
	DefaultWindow    = 24 * time.Hour
	DefaultThreshold = 0.20
	DefaultInterval  = 5 * time.Minute
	DefaultSettle    = time.Minute
)

// Options configures an Accuracy. The zero value is ready to use.
type Options struct {
	// Window is how far back Run and MAPE-less queries look (default 24 h).
	Window time.Duration
	// Threshold is the MAPE above which a region (and a result) is in alert
	// (default 0.20 = 20 %).
	Threshold float64
	// MAPEMinActual is the smallest realised demand that counts towards MAPE
	// (default validation.DefaultMAPEMinActual = 5).
	MAPEMinActual float64
	// Interval is Run's refresh period (default 5 minutes).
	Interval time.Duration
	// Settle is how long after a horizon's last minute ended its demand is
	// taken as complete, for late events (default 1 minute). A horizon also
	// counts only once demand_minute holds a minute at or after its last one.
	Settle time.Duration
	// Logger receives the alert warnings (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives surge_forecast_mape and
	// surge_forecast_accuracy_alert; nil registers none.
	Registerer prometheus.Registerer
}

// ErrInvalidQuery is returned for a query the monitor cannot answer
// (a window out of range).
var ErrInvalidQuery = errors.New("monitoring: invalid query")

// Query selects the forecasts to evaluate. Empty fields select all.
type Query struct {
	RegionID     string
	ModelVersion string
	// Since is the earliest forecast time; zero means now − Options.Window.
	Since time.Time
}

// Result is the accuracy of one model version's forecasts in one region.
type Result struct {
	RegionID     string
	ModelVersion string
	// Metrics has N = the number of joined forecast points (one per region,
	// version, horizon and minute: the mean of that minute's forecasts),
	// MAPE over the points with actual ≥ MAPEMinActual (NaN when none), WAPE
	// and bias (signed, > 0 over-forecast; NaN when no demand).
	validation.Metrics
	// Alert is MAPE > Threshold.
	Alert     bool
	Threshold float64
}

// Accuracy computes forecast accuracy from ClickHouse. It is safe for
// concurrent use.
type Accuracy struct {
	conn driver.Conn
	opts Options
	now  func() time.Time

	mape  *prometheus.GaugeVec
	alert *prometheus.GaugeVec

	mu       sync.Mutex
	alerting map[string]bool
	series   map[[2]string]bool
}

// New returns an Accuracy over conn, whose default database holds the
// migrated tables. It registers its metrics on opts.Registerer.
func New(conn driver.Conn, opts Options) (*Accuracy, error) {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Threshold <= 0 {
		opts.Threshold = DefaultThreshold
	}
	if opts.MAPEMinActual <= 0 {
		opts.MAPEMinActual = validation.DefaultMAPEMinActual
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Accuracy{
		conn: conn, opts: opts, now: time.Now,
		mape: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_forecast_mape",
			Help: "MAPE (0.1 = 10 %) of the MODEL forecasts of the window joined with realised demand, per region and model version.",
		}, []string{"region", "model_version"}),
		alert: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_forecast_accuracy_alert",
			Help: "1 when the region's forecast MAPE over the window (all model versions) is above the threshold.",
		}, []string{"region"}),
		alerting: map[string]bool{},
		series:   map[[2]string]bool{},
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{a.mape, a.alert} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("monitoring: register metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Threshold returns the MAPE alert threshold in use.
func (a *Accuracy) Threshold() float64 { return a.opts.Threshold }

// point is one joined forecast: the mean forecast of a minute against the
// realised demand over its horizon.
type point struct {
	region, version string
	pred, actual    float64
}

// Compute returns the accuracy of the forecasts selected by q whose horizon
// is complete, one Result per region and model version, ordered by region
// then version. Regions and versions without a complete forecast are absent.
func (a *Accuracy) Compute(ctx context.Context, q Query) ([]Result, error) {
	pts, err := a.points(ctx, q)
	if err != nil {
		return nil, err
	}
	acc := map[[2]string]*validation.Accumulator{}
	for _, p := range pts {
		k := [2]string{p.region, p.version}
		if acc[k] == nil {
			acc[k] = &validation.Accumulator{MAPEMinActual: a.opts.MAPEMinActual}
		}
		acc[k].Add(p.pred, p.actual)
	}
	out := make([]Result, 0, len(acc))
	for k, ac := range acc {
		m := ac.Metrics()
		out = append(out, Result{RegionID: k[0], ModelVersion: k[1], Metrics: m,
			Alert: m.MAPE > a.opts.Threshold, Threshold: a.opts.Threshold})
	}
	slices.SortFunc(out, func(x, y Result) int {
		if x.RegionID != y.RegionID {
			if x.RegionID < y.RegionID {
				return -1
			}
			return 1
		}
		if x.ModelVersion < y.ModelVersion {
			return -1
		}
		if x.ModelVersion > y.ModelVersion {
			return 1
		}
		return 0
	})
	return out, nil
}

// MAPE implements rollout.AccuracySource: the MAPE of version's complete
// forecasts made since since, over all regions, and the number of points
// it is computed over (those with actual ≥ MAPEMinActual). The audit trail
// does not record the model name, so name is not used: one service serves
// one model name. With no such point, mape is 0 and samples 0.
func (a *Accuracy) MAPE(ctx context.Context, name, version string, since time.Time) (float64, int, error) {
	if version == "" {
		return 0, 0, fmt.Errorf("%w: empty model version", ErrInvalidQuery)
	}
	if since.IsZero() {
		since = a.now().Add(-a.opts.Window)
	}
	pts, err := a.points(ctx, Query{ModelVersion: version, Since: since})
	if err != nil {
		return 0, 0, fmt.Errorf("monitoring: MAPE of %s %s: %w", name, version, err)
	}
	ac := validation.Accumulator{MAPEMinActual: a.opts.MAPEMinActual}
	for _, p := range pts {
		ac.Add(p.pred, p.actual)
	}
	m := ac.Metrics()
	if m.NMAPE == 0 {
		return 0, 0, nil
	}
	return m.MAPE, m.NMAPE, nil
}

// points reads the forecasts and the realised demand and joins them.
func (a *Accuracy) points(ctx context.Context, q Query) ([]point, error) {
	now := a.now().UTC()
	since := q.Since
	if since.IsZero() {
		since = now.Add(-a.opts.Window)
	}
	since = since.UTC().Truncate(time.Minute)
	if !since.Before(now) {
		return nil, nil
	}

	// The forecast's own minute is that of its generatedAt (forecast_at;
	// for rows written before the column, its default reads the JSON
	// record: migration 0010).
	where, args := "forecast_source = 'MODEL' AND at >= ? AND at < ?", []any{since, now.Add(time.Minute)}
	if q.RegionID != "" {
		where += " AND region_id = ?"
		args = append(args, q.RegionID)
	}
	if q.ModelVersion != "" {
		where += " AND model_version = ?"
		args = append(args, q.ModelVersion)
	}
	rows, err := a.conn.Query(ctx, `
		SELECT region_id, model_version, h, m, avg(demand)
		FROM (
			SELECT region_id, model_version, horizon_minutes AS h, forecast_demand AS demand,
				toStartOfMinute(forecast_at) AS m
			FROM pricing_decisions
			WHERE `+where+`
		)
		WHERE h > 0 AND m >= ?
		GROUP BY region_id, model_version, h, m`, append(args, since)...)
	if err != nil {
		return nil, fmt.Errorf("monitoring: query forecasts: %w", err)
	}
	type fc struct {
		region, version string
		h               uint32
		m               time.Time
		demand          float64
	}
	var fcs []fc
	for rows.Next() {
		var f fc
		if err := rows.Scan(&f.region, &f.version, &f.h, &f.m, &f.demand); err != nil {
			rows.Close()
			return nil, fmt.Errorf("monitoring: scan forecast: %w", err)
		}
		fcs = append(fcs, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("monitoring: read forecasts: %w", err)
	}
	if len(fcs) == 0 {
		return nil, nil
	}

	// How far demand_minute has been filled, over every region: a missing
	// minute of a region means no activity only up to there.
	var latest time.Time
	if err := a.conn.QueryRow(ctx, `SELECT max(minute) FROM demand_minute WHERE minute >= ?`, since).Scan(&latest); err != nil {
		return nil, fmt.Errorf("monitoring: query latest demand minute: %w", err)
	}

	dwhere, dargs := "minute > ? AND minute <= ?", []any{since, latest}
	if q.RegionID != "" {
		dwhere += " AND region_id = ?"
		dargs = append(dargs, q.RegionID)
	}
	drows, err := a.conn.Query(ctx, `
		SELECT region_id, minute, sum(searches)
		FROM demand_minute
		WHERE `+dwhere+`
		GROUP BY region_id, minute`, dargs...)
	if err != nil {
		return nil, fmt.Errorf("monitoring: query demand: %w", err)
	}
	type rm struct {
		region string
		minute int64
	}
	searches := map[rm]float64{}
	for drows.Next() {
		var (
			region string
			minute time.Time
			n      uint64
		)
		if err := drows.Scan(&region, &minute, &n); err != nil {
			drows.Close()
			return nil, fmt.Errorf("monitoring: scan demand: %w", err)
		}
		searches[rm{region, minute.Unix() / 60}] = float64(n)
	}
	drows.Close()
	if err := drows.Err(); err != nil {
		return nil, fmt.Errorf("monitoring: read demand: %w", err)
	}

	// A forecast made during minute t covers the h full minutes after it,
	// t+1 … t+h (as in training: features at the end of minute t, target
	// the next h minutes).
	pts := make([]point, 0, len(fcs))
	for _, f := range fcs {
		last := f.m.Add(time.Duration(f.h) * time.Minute)
		if latest.IsZero() || last.After(latest) || last.Add(time.Minute+a.opts.Settle).After(now) {
			continue
		}
		var actual float64
		base := f.m.Unix() / 60
		for i := int64(1); i <= int64(f.h); i++ {
			actual += searches[rm{f.region, base + i}]
		}
		pts = append(pts, point{region: f.region, version: f.version, pred: f.demand, actual: actual})
	}
	return pts, nil
}

// Refresh recomputes the window's accuracy and updates the metrics: the
// MAPE of each region and version, and each region's alert (its MAPE over
// all versions above Threshold). A warning is logged when a region's alert
// starts, an info when it ends.
func (a *Accuracy) Refresh(ctx context.Context) error {
	pts, err := a.points(ctx, Query{})
	if err != nil {
		return err
	}
	byKey := map[[2]string]*validation.Accumulator{}
	byRegion := map[string]*validation.Accumulator{}
	for _, p := range pts {
		k := [2]string{p.region, p.version}
		if byKey[k] == nil {
			byKey[k] = &validation.Accumulator{MAPEMinActual: a.opts.MAPEMinActual}
		}
		if byRegion[p.region] == nil {
			byRegion[p.region] = &validation.Accumulator{MAPEMinActual: a.opts.MAPEMinActual}
		}
		byKey[k].Add(p.pred, p.actual)
		byRegion[p.region].Add(p.pred, p.actual)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[[2]string]bool{}
	for k, ac := range byKey {
		m := ac.Metrics()
		if m.NMAPE == 0 {
			continue
		}
		a.mape.WithLabelValues(k[0], k[1]).Set(m.MAPE)
		seen[k] = true
	}
	for k := range a.series {
		if !seen[k] {
			a.mape.DeleteLabelValues(k[0], k[1])
		}
	}
	a.series = seen
	alerting := map[string]bool{}
	for region, ac := range byRegion {
		m := ac.Metrics()
		on := m.NMAPE > 0 && m.MAPE > a.opts.Threshold
		v := 0.0
		if on {
			v = 1
			alerting[region] = true
			if !a.alerting[region] {
				a.opts.Logger.Warn("forecast accuracy alert", "region", region,
					"mape", math.Round(m.MAPE*10000)/10000, "threshold", a.opts.Threshold, "points", m.NMAPE,
					"window", a.opts.Window.String())
			}
		} else if a.alerting[region] {
			a.opts.Logger.Info("forecast accuracy alert resolved", "region", region, "mape", m.MAPE, "threshold", a.opts.Threshold)
		}
		a.alert.WithLabelValues(region).Set(v)
	}
	for region := range a.alerting {
		if byRegion[region] == nil {
			a.alert.DeleteLabelValues(region)
			a.opts.Logger.Info("forecast accuracy alert resolved", "region", region, "reason", "no forecasts in the window")
		}
	}
	a.alerting = alerting
	return nil
}

// Alerting reports whether region's accuracy alert is on, as of the last
// Refresh.
func (a *Accuracy) Alerting(region string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.alerting[region]
}

// Run refreshes the metrics every Interval until ctx ends, starting at
// once. A failed refresh is logged and retried at the next tick; Run
// returns nil when ctx ends.
func (a *Accuracy) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
			a.opts.Logger.Warn("forecast accuracy refresh failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
