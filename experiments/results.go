package experiments

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/surgeworks/surge/experiments/stats"
)

// AnalysisOptions tunes the statistics. Zero values take the defaults.
type AnalysisOptions struct {
	// Alpha is the significance level, two-sided (default 0.05).
	Alpha float64
	// RevenueCapPercentile winsorizes per-user revenue at this percentile
	// of the converted users' revenue (default 0.99; 1 disables the cap),
	// so that one huge booking cannot decide an experiment.
	RevenueCapPercentile float64
	// SRMAlpha flags a sample-ratio mismatch below this p-value (default 0.001).
	SRMAlpha float64
	// Power for the minimum detectable effect (default 0.8).
	Power float64
}

func (o *AnalysisOptions) defaults() {
	if o.Alpha <= 0 || o.Alpha >= 1 {
		o.Alpha = 0.05
	}
	if o.RevenueCapPercentile <= 0 || o.RevenueCapPercentile > 1 {
		o.RevenueCapPercentile = 0.99
	}
	if o.SRMAlpha <= 0 || o.SRMAlpha >= 1 {
		o.SRMAlpha = 0.001
	}
	if o.Power <= 0 || o.Power >= 1 {
		o.Power = 0.8
	}
}

// Verdict is what the results say to do.
type Verdict string

// The verdicts.
const (
	VerdictKeepRunning  Verdict = "KEEP_RUNNING"
	VerdictWinner       Verdict = "WINNER"
	VerdictLoser        Verdict = "LOSER"
	VerdictNoDifference Verdict = "NO_DIFFERENCE"
	VerdictInvalidSRM   Verdict = "INVALID_SRM"
)

// Estimate is a mean per exposed user with its standard error.
type Estimate struct{ Value, StdErr float64 }

// VariantResult is what one variant's users did.
type VariantResult struct {
	Name    string
	Weight  float64 // percent
	Control bool
	// Users exposed, users with a booking, bookings, users with a
	// cancellation, cancellations.
	Users, ConvertedUsers, Conversions, CancelledUsers, Cancellations int64
	// Revenue is the raw booking revenue; CappedRevenue after winsorizing.
	Revenue, CappedRevenue float64
	// ObservedShare of all exposed users (compare with Weight/100).
	ObservedShare                                    float64
	ConversionRate, RevenuePerUser, CancellationRate Estimate
	// PrePeriodUsers had a booking in the pre-period (CUPED covariate).
	PrePeriodUsers int64
}

// Comparison is one treatment against the control on one metric.
type Comparison struct {
	Variant string
	stats.Comparison
	// AdjustedPValue is the sequential p-value adjusted for multiple
	// comparisons: Holm across the treatments for the primary metric,
	// Benjamini–Hochberg across every guardrail comparison.
	AdjustedPValue float64
	// Significant: AdjustedPValue < alpha. Better: the lift goes the way
	// the metric improves.
	Significant, Better bool
	// MDE is the minimum detectable relative effect at the planned end
	// (the minimum duration, or the maximum once that has passed) at the
	// current rate of enrolment, with the configured power.
	MDE float64
}

// MetricResult is one metric's comparisons.
type MetricResult struct {
	Metric      Metric
	Guardrail   bool
	Comparisons []Comparison
}

// DailyPoint is one variant's activity on one experiment day (day 0 starts
// at the experiment's start).
type DailyPoint struct {
	Day                             int
	Start                           time.Time
	Variant                         string
	Exposures, Conversions, Cancels int64
	Revenue                         float64
}

// SRMCheck is the sample-ratio-mismatch test of the exposed users against the weights.
type SRMCheck struct {
	ChiSquare, PValue float64
	Mismatch          bool
}

// Results are an experiment's figures, statistics and verdict, computed
// from ClickHouse at ComputedAt.
type Results struct {
	ExperimentID  string
	Status        Status
	Verdict       Verdict
	VerdictReason string
	Winner        string // with VerdictWinner
	DaysElapsed   float64
	MinDays       float64
	MaxDays       float64
	Alpha         float64
	RevenueCap    float64 // 0: no revenue yet or no cap
	SRM           SRMCheck
	Variants      []VariantResult
	Metrics       []MetricResult
	Daily         []DailyPoint
	ComputedAt    time.Time
}

// variantRow is what ClickHouse returns per experiment and variant.
type variantRow struct {
	experiment, variant                      string
	users, converted, conversions, cancelled uint64
	cancels, bookingsSq, cancelsSq           uint64
	bookingsCancels                          uint64
	revenueRaw, revenue, revenueSq           float64
	preBooked, preBookedConverted            uint64
	preRevenue, preRevenueSq, preCross       float64
	revenueCap                               float64
	days                                     []int64
	dayExposures, dayConversions, dayCancels []uint64
	dayRevenue                               []float64
}

// A snapshot of one experiment is computed inside ClickHouse in two
// statements: the revenue cap (a percentile of the converted users'
// revenue), then an INSERT … SELECT of the per-variant sums into
// experiment_results. usersActivity is every exposed user (the unit) with
// their activity from the start (y…) and in the pre-period (x…, the CUPED
// covariate), one pass over user_activity_minute. Placeholders: id, pre,
// from, from, from, from, from, to.
//
// Every joined subquery has an alias: current ClickHouse refuses a JOIN of
// one without (joined_subquery_requires_alias); 18.16 accepts both.
const usersActivity = `
    SELECT variant, user_key, yb, yk, yr, xb, xr FROM
      (SELECT variant, user_key FROM experiment_users WHERE experiment_id = ? GROUP BY variant, user_key) AS exposed
    ANY LEFT JOIN
      (SELECT user_key,
         sumIf(bookings, minute < toDateTime(?2)) AS xb, sumIf(revenue, minute < toDateTime(?2)) AS xr,
         sumIf(bookings, minute >= toDateTime(?2)) AS yb, sumIf(cancels, minute >= toDateTime(?2)) AS yk,
         sumIf(revenue, minute >= toDateTime(?2)) AS yr
       FROM user_activity_minute WHERE minute >= toDateTime(?1) AND minute < toDateTime(?3)
       GROUP BY user_key) AS activity USING user_key`

// capQuery: the winsorization cap of one experiment ({percentile} is a
// literal: aggregate parameters must be).
const capQuery = `SELECT if(isFinite(q), q, 1e300) FROM (SELECT quantile({percentile})(yr) AS q FROM (` + usersActivity + `) WHERE yr > 0)`

// snapshotQuery inserts one snapshot. Placeholders: computed_at, window_to,
// cap, usersActivity's, then the daily series': start, day, id, from, to,
// start, day, id, from, to.
const snapshotQuery = `INSERT INTO experiment_results
SELECT experiment_id, computed_at, window_to, variant, users, converted, conversions, cancelled,
  cancels, bookings_sq, cancels_sq, bookings_cancels, revenue_raw, revenue, revenue_sq, pre_booked, pre_booked_converted, pre_revenue, pre_revenue_sq, pre_cross, revenue_cap,
  days, day_exposures, day_conversions, day_cancels, day_revenue
FROM (
SELECT {id} AS experiment_id, toDateTime(?) AS computed_at, toDateTime(?) AS window_to, variant,
  count() AS users,
  countIf(yb > 0) AS converted,
  sum(yb) AS conversions,
  countIf(yk > 0) AS cancelled,
  sum(yk) AS cancels,
  sum(yb * yb) AS bookings_sq,
  sum(yk * yk) AS cancels_sq,
  sum(yb * yk) AS bookings_cancels,
  sum(yr) AS revenue_raw,
  sum(least(yr, cap)) AS revenue,
  sum(least(yr, cap) * least(yr, cap)) AS revenue_sq,
  countIf(xb > 0) AS pre_booked,
  countIf(xb > 0 AND yb > 0) AS pre_booked_converted,
  sum(least(xr, cap)) AS pre_revenue,
  sum(least(xr, cap) * least(xr, cap)) AS pre_revenue_sq,
  sum(least(xr, cap) * least(yr, cap)) AS pre_cross,
  any(cap) AS revenue_cap
FROM (SELECT *, toFloat64(?) AS cap FROM (` + usersActivity + `))
GROUP BY variant
) AS totals ANY LEFT JOIN (
SELECT variant, groupArray(day) AS days, groupArray(e) AS day_exposures, groupArray(cv) AS day_conversions,
  groupArray(ca) AS day_cancels, groupArray(rv) AS day_revenue
FROM (
  SELECT variant, day, toUInt64(sum(e)) AS e, toUInt64(sum(cv)) AS cv, toUInt64(sum(ca)) AS ca, toFloat64(sum(rv)) AS rv
  FROM (
    SELECT variant, intDiv(toInt64(toUInt32(minute)) - ?, ?) AS day,
      exposures AS e, toUInt64(0) AS cv, toUInt64(0) AS ca, toFloat64(0) AS rv
    FROM experiment_minute WHERE experiment_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)
    UNION ALL
    SELECT variant, intDiv(toInt64(toUInt32(minute)) - ?, ?) AS day,
      toUInt64(0) AS e, bookings AS cv, cancels AS ca, revenue AS rv
    FROM user_activity_minute ANY INNER JOIN
      (SELECT variant, user_key FROM experiment_users WHERE experiment_id = ? GROUP BY variant, user_key) AS exposed USING user_key
    WHERE minute >= toDateTime(?) AND minute < toDateTime(?)
  )
  GROUP BY variant, day ORDER BY variant, day
) GROUP BY variant
) AS daily USING variant`

// window is the activity an experiment's results count at now: from the
// minute of the start to the end (the stop, or now), the pre-period before.
func window(e *Experiment, now time.Time) (pre, from, to int64) {
	from = e.StartedAt.Unix() - e.StartedAt.Unix()%60
	to = now.Unix() + 60
	if !e.StoppedAt.IsZero() && e.StoppedAt.Before(now) {
		to = e.StoppedAt.Unix() + 60
	}
	return from - int64(e.PrePeriodDays*e.DayLength.Seconds()), from, to
}

// bindUsersActivity expands usersActivity's numbered placeholders.
func bindUsersActivity(q string) string {
	q = strings.ReplaceAll(q, "?1", "{pre}")
	q = strings.ReplaceAll(q, "?2", "{from}")
	return strings.ReplaceAll(q, "?3", "{to}")
}

// literal formats the parameters of one experiment into a statement: ids
// are validated identifiers and the rest numbers, so no quoting problem
// arises, and ClickHouse 18.16 wants literals for aggregate parameters.
func literal(q string, e *Experiment, pre, from, to int64, percentile float64) string {
	q = bindUsersActivity(q)
	return strings.NewReplacer(
		"{id}", "'"+e.ID+"'", "{pre}", strconv.FormatInt(pre, 10), "{from}", strconv.FormatInt(from, 10),
		"{to}", strconv.FormatInt(to, 10), "{percentile}", strconv.FormatFloat(percentile, 'f', -1, 64),
	).Replace(q)
}

// RefreshResults computes a new results snapshot of one experiment at now.
// Concurrent refreshes of one experiment share one computation.
func (s *Service) RefreshResults(ctx context.Context, id string) error {
	_, err, _ := s.refreshing.Do(id, func() (any, error) { return nil, s.refresh(ctx, id) })
	return err
}

func (s *Service) refresh(ctx context.Context, id string) error {
	e, ok := s.Get(id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if e.StartedAt.IsZero() {
		return nil // a draft has no data
	}
	start := time.Now()
	defer func() { s.m.snapshots.Observe(time.Since(start).Seconds()) }()
	now := s.opts.Now().UTC().Truncate(time.Second)
	pre, from, to := window(&e, now)
	var revenueCap float64
	if err := s.conn.QueryRow(ctx, literal(capQuery, &e, pre, from, to, s.opts.Analysis.RevenueCapPercentile), e.ID).Scan(&revenueCap); err != nil {
		return fmt.Errorf("experiments: revenue cap of %s: %w", id, err)
	}
	windowTo := time.Unix(to, 0).UTC()
	if !e.StoppedAt.IsZero() && e.StoppedAt.Before(now) {
		windowTo = e.StoppedAt.UTC()
	}
	start0, day := e.StartedAt.Unix(), max(1, int64(e.DayLength/time.Second))
	if err := s.conn.Exec(ctx, literal(snapshotQuery, &e, pre, from, to, 0),
		now, windowTo, revenueCap, e.ID,
		start0, day, e.ID, from, to,
		start0, day, e.ID, from, to); err != nil {
		return fmt.Errorf("experiments: results snapshot of %s: %w", id, err)
	}
	return nil
}

// snapshotColumns are read back from experiment_results.
const snapshotColumns = `experiment_id, computed_at, variant, users, converted, conversions, cancelled,
  cancels, bookings_sq, cancels_sq, bookings_cancels, revenue_raw, revenue, revenue_sq, pre_booked, pre_booked_converted, pre_revenue, pre_revenue_sq, pre_cross, revenue_cap,
  days, day_exposures, day_conversions, day_cancels, day_revenue`

// snapshots reads the latest snapshot of each experiment, by id.
func (s *Service) snapshots(ctx context.Context, ids []string) (map[string][]variantRow, map[string]time.Time, error) {
	rows := map[string][]variantRow{}
	at := map[string]time.Time{}
	if len(ids) == 0 {
		return rows, at, nil
	}
	// ids are validated identifiers: listed as literals (ClickHouse 18.16
	// takes no array parameter on the right of IN).
	list := "'" + strings.Join(ids, "','") + "'"
	rs, err := s.conn.Query(ctx, `SELECT `+snapshotColumns+` FROM experiment_results
		WHERE experiment_id IN (`+list+`) AND (experiment_id, computed_at) IN
		  (SELECT experiment_id, max(computed_at) FROM experiment_results WHERE experiment_id IN (`+list+`) GROUP BY experiment_id)`)
	if err != nil {
		return nil, nil, fmt.Errorf("experiments: read results: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var r variantRow
		var computed time.Time
		if err := rs.Scan(&r.experiment, &computed, &r.variant, &r.users, &r.converted, &r.conversions, &r.cancelled,
			&r.cancels, &r.bookingsSq, &r.cancelsSq, &r.bookingsCancels, &r.revenueRaw, &r.revenue, &r.revenueSq, &r.preBooked, &r.preBookedConverted,
			&r.preRevenue, &r.preRevenueSq, &r.preCross, &r.revenueCap,
			&r.days, &r.dayExposures, &r.dayConversions, &r.dayCancels, &r.dayRevenue); err != nil {
			return nil, nil, fmt.Errorf("experiments: results row: %w", err)
		}
		rows[r.experiment] = append(rows[r.experiment], r)
		at[r.experiment] = computed
	}
	return rows, at, rs.Err()
}

// Results returns the results of experiments (results[i] is for ids[i])
// from their latest snapshots, read in one query; an experiment that has
// run but has no snapshot yet gets one first. The figures are as of the
// snapshot's time (ComputedAt); the background refresh (Run) keeps it
// within ResultsInterval of now, RefreshResults on demand. An unknown id is
// ErrNotFound for the batch.
func (s *Service) Results(ctx context.Context, ids []string) ([]Results, error) {
	start := time.Now()
	defer func() { s.m.results.Observe(time.Since(start).Seconds()) }()
	exps := make([]Experiment, len(ids))
	for i, id := range ids {
		e, ok := s.Get(id)
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		exps[i] = e
	}
	rows, at, err := s.snapshots(ctx, ids)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, e := range exps {
		if _, ok := at[e.ID]; !ok && !e.StartedAt.IsZero() {
			missing = append(missing, e.ID)
		}
	}
	if len(missing) > 0 {
		for _, id := range missing {
			if err := s.RefreshResults(ctx, id); err != nil {
				return nil, err
			}
		}
		if rows, at, err = s.snapshots(ctx, ids); err != nil {
			return nil, err
		}
	}
	out := make([]Results, len(ids))
	for i := range exps {
		when, ok := at[exps[i].ID]
		if !ok {
			when = s.opts.Now().UTC()
		}
		out[i] = analyse(&exps[i], rows[exps[i].ID], when, s.opts.Analysis)
	}
	return out, nil
}

// refreshDue refreshes the snapshots of the running experiments older than
// ResultsInterval, and once more those of experiments stopped since their
// last snapshot.
func (s *Service) refreshDue(ctx context.Context) {
	var ids []string
	for _, e := range s.List() {
		if !e.StartedAt.IsZero() && (e.Status == StatusRunning || e.Status == StatusStopped || e.Status == StatusRolledOut) {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	_, at, err := s.snapshots(ctx, ids)
	if err != nil {
		s.opts.Logger.Warn("experiment results refresh: read snapshots", "err", err)
		return
	}
	now := s.opts.Now()
	for _, id := range ids {
		e, _ := s.Get(id)
		last, ok := at[id]
		due := !ok || (e.Status == StatusRunning && now.Sub(last) >= s.opts.ResultsInterval) ||
			(e.Status != StatusRunning && last.Before(e.StoppedAt.Truncate(time.Second)))
		if !due {
			continue
		}
		if err := s.RefreshResults(ctx, id); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("experiment results refresh failed", "experiment", id, "err", err)
		}
	}
}

// analyse turns the sums of one experiment into its results.
func analyse(e *Experiment, rows []variantRow, now time.Time, o AnalysisOptions) Results {
	res := Results{
		ExperimentID: e.ID, Status: e.Status, DaysElapsed: e.Elapsed(now), MinDays: e.MinDays, MaxDays: e.MaxDays,
		Alpha: o.Alpha, ComputedAt: now,
	}
	byName := map[string]variantRow{}
	var total float64
	for _, r := range rows {
		byName[r.variant] = r
		total += float64(r.users)
	}
	counts := make([]float64, len(e.Variants))
	weights := make([]float64, len(e.Variants))
	paired := make([]map[Metric]stats.Paired, len(e.Variants))
	for i, v := range e.Variants {
		r := byName[v.Name]
		if r.revenueCap < 1e299 {
			res.RevenueCap = r.revenueCap
		}
		n := float64(r.users)
		counts[i], weights[i] = n, v.Weight
		conv := stats.Moments{N: n, Sum: float64(r.converted), SumSq: float64(r.converted)}
		rev := stats.Moments{N: n, Sum: r.revenue, SumSq: r.revenueSq}
		// Cancellations per booking: a ratio over users (delta method).
		canc := stats.Ratio(stats.Moments{N: n, Sum: float64(r.cancels), SumSq: float64(r.cancelsSq)},
			stats.Moments{N: n, Sum: float64(r.conversions), SumSq: float64(r.bookingsSq)}, float64(r.bookingsCancels))
		paired[i] = map[Metric]stats.Paired{
			MetricConversionRate:   {Y: conv, X: stats.Moments{N: n, Sum: float64(r.preBooked), SumSq: float64(r.preBooked)}, XY: float64(r.preBookedConverted)},
			MetricRevenuePerUser:   {Y: rev, X: stats.Moments{N: n, Sum: r.preRevenue, SumSq: r.preRevenueSq}, XY: r.preCross},
			MetricCancellationRate: {Y: canc},
		}
		vr := VariantResult{
			Name: v.Name, Weight: v.Weight, Control: i == 0,
			Users: int64(r.users), ConvertedUsers: int64(r.converted), Conversions: int64(r.conversions), CancelledUsers: int64(r.cancelled),
			Cancellations: int64(r.cancels), Revenue: r.revenueRaw, CappedRevenue: r.revenue, PrePeriodUsers: int64(r.preBooked),
			ConversionRate: estimate(conv), RevenuePerUser: estimate(rev), CancellationRate: estimate(canc),
		}
		if total > 0 {
			vr.ObservedShare = n / total
		}
		res.Variants = append(res.Variants, vr)
		start := e.StartedAt.UTC()
		for j, d := range r.days {
			res.Daily = append(res.Daily, DailyPoint{
				Day: int(d), Start: start.Add(time.Duration(d) * e.DayLength), Variant: v.Name,
				Exposures: int64(r.dayExposures[j]), Conversions: int64(r.dayConversions[j]),
				Cancels: int64(r.dayCancels[j]), Revenue: r.dayRevenue[j],
			})
		}
	}
	slices.SortFunc(res.Daily, func(a, b DailyPoint) int {
		if a.Day != b.Day {
			return a.Day - b.Day
		}
		return strings.Compare(a.Variant, b.Variant)
	})
	if total > 0 {
		res.SRM.ChiSquare, res.SRM.PValue = stats.SampleRatioMismatch(counts, weights)
		res.SRM.Mismatch = res.SRM.PValue < o.SRMAlpha
	} else {
		res.SRM.PValue = 1
	}

	// The planned end, for the MDE: the minimum duration, or the maximum
	// once the minimum has passed, at the enrolment rate so far.
	planned := e.MinDays
	if res.DaysElapsed >= e.MinDays {
		planned = e.MaxDays
	}
	growth := 1.0
	if res.DaysElapsed > 0 {
		growth = max(1, planned/res.DaysElapsed)
	}
	metrics := append([]Metric{e.PrimaryMetric}, e.Guardrails...)
	for mi, m := range metrics {
		mr := MetricResult{Metric: m, Guardrail: mi > 0}
		for i := 1; i < len(e.Variants); i++ {
			c, t := paired[0][m], paired[i][m]
			// The mixture of the sequential test is tuned to the planned
			// sample, fixed before any data: the minimum per variant.
			opts := stats.Options{Alpha: o.Alpha, Binomial: m.Binomial(), Power: o.Power,
				PlannedN: float64(e.MinSamplePerVariant)}
			cmp := stats.Compare(c, t, opts)
			better := cmp.AbsLift > 0 == m.HigherIsBetter()
			mde := 0.0
			if cm := cmp.ControlMean; cm != 0 && c.Y.N > 0 && t.Y.N > 0 {
				// Per-unit variances from the standard errors, so that a
				// CUPED-adjusted estimate gets its smaller MDE.
				vc, vt := cmp.ControlSE*cmp.ControlSE*c.Y.N, cmp.TreatmentSE*cmp.TreatmentSE*t.Y.N
				mde = stats.MinimumDetectableEffect(vc, vt, growth*c.Y.N, growth*t.Y.N, o.Alpha, o.Power) / math.Abs(cm)
			}
			mr.Comparisons = append(mr.Comparisons, Comparison{Variant: e.Variants[i].Name, Comparison: cmp, Better: better, MDE: mde})
		}
		res.Metrics = append(res.Metrics, mr)
	}
	// Multiple comparisons: Holm over the treatments of the primary metric,
	// Benjamini–Hochberg over every guardrail comparison.
	adjust := func(idx [][2]int, f func([]float64) []float64) {
		ps := make([]float64, len(idx))
		for k, ij := range idx {
			ps[k] = res.Metrics[ij[0]].Comparisons[ij[1]].SequentialPValue
		}
		for k, q := range f(ps) {
			c := &res.Metrics[idx[k][0]].Comparisons[idx[k][1]]
			c.AdjustedPValue = q
			c.Significant = q < o.Alpha
		}
	}
	var primary, guard [][2]int
	for mi := range res.Metrics {
		for ci := range res.Metrics[mi].Comparisons {
			if mi == 0 {
				primary = append(primary, [2]int{mi, ci})
			} else {
				guard = append(guard, [2]int{mi, ci})
			}
		}
	}
	adjust(primary, stats.Holm)
	if len(guard) > 0 {
		adjust(guard, stats.BenjaminiHochberg)
	}
	res.Verdict, res.Winner, res.VerdictReason = decide(e, &res)
	return res
}

func estimate(m stats.Moments) Estimate {
	se := 0.0
	if m.N > 0 {
		se = math.Sqrt(m.Variance() / m.N)
	}
	return Estimate{Value: m.Mean(), StdErr: se}
}

// decide names the verdict. Nothing is decided before the minimum duration
// and the minimum sample per variant; a sample-ratio mismatch invalidates
// the experiment whatever the lifts say; a treatment wins when its primary
// metric is significantly better (sequential test, Holm-adjusted) and no
// guardrail is significantly worse (Benjamini–Hochberg); the experiment is
// lost when every treatment is significantly worse, or the best one harms
// a guardrail; past the maximum duration without a significant result
// there is no difference.
func decide(e *Experiment, res *Results) (Verdict, string, string) {
	if res.SRM.Mismatch {
		return VerdictInvalidSRM, "", fmt.Sprintf("sample ratio mismatch: the exposed users do not match the weights (chi-square %.1f, p = %.2g < %g); look for a bug in assignment or logging before trusting any figure",
			res.SRM.ChiSquare, res.SRM.PValue, 0.001)
	}
	if res.DaysElapsed < e.MinDays {
		return VerdictKeepRunning, "", fmt.Sprintf("%.1f of the minimum %g days have passed", res.DaysElapsed, e.MinDays)
	}
	for _, v := range res.Variants {
		if v.Users < int64(e.MinSamplePerVariant) {
			return VerdictKeepRunning, "", fmt.Sprintf("variant %s has %d exposed users of the minimum %d", v.Name, v.Users, e.MinSamplePerVariant)
		}
	}
	primary := res.Metrics[0]
	harmed := func(variant string) string {
		for _, m := range res.Metrics[1:] {
			for _, c := range m.Comparisons {
				if c.Variant == variant && c.Significant && !c.Better {
					return string(m.Metric)
				}
			}
		}
		return ""
	}
	best, worse := -1, 0
	for i, c := range primary.Comparisons {
		switch {
		case c.Significant && c.Better:
			if best < 0 || c.RelLift*sign(primary.Metric) > primary.Comparisons[best].RelLift*sign(primary.Metric) {
				best = i
			}
		case c.Significant:
			worse++
		}
	}
	if best >= 0 {
		c := primary.Comparisons[best]
		if g := harmed(c.Variant); g != "" {
			return VerdictLoser, "", fmt.Sprintf("variant %s improves %s by %+.1f %% but makes the guardrail %s significantly worse",
				c.Variant, primary.Metric, 100*c.RelLift, g)
		}
		return VerdictWinner, c.Variant, fmt.Sprintf("variant %s beats the control on %s by %+.1f %% (95 %% CI %+.1f %% to %+.1f %%, sequential p = %.2g adjusted), no guardrail worse",
			c.Variant, primary.Metric, 100*c.RelLift, 100*c.RelCI.Lower, 100*c.RelCI.Upper, c.AdjustedPValue)
	}
	if worse == len(primary.Comparisons) {
		return VerdictLoser, "", fmt.Sprintf("every treatment is significantly worse than the control on %s", primary.Metric)
	}
	if res.DaysElapsed >= e.MaxDays {
		return VerdictNoDifference, "", fmt.Sprintf("no significant difference on %s after the maximum %g days", primary.Metric, e.MaxDays)
	}
	mde := 0.0
	for _, c := range primary.Comparisons {
		mde = max(mde, c.MDE)
	}
	return VerdictKeepRunning, "", fmt.Sprintf("no significant difference on %s yet; by day %g the experiment can detect a relative effect of about %.1f %%",
		primary.Metric, e.MaxDays, 100*mde)
}

func sign(m Metric) float64 {
	if m.HigherIsBetter() {
		return 1
	}
	return -1
}
