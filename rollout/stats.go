package rollout

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeworks/surge/inference"
)

// counter accumulates one version's inference calls in a rollout.
type counter struct {
	version          string
	requests, errors int64
	durations        []time.Duration // ring of the last LatencyWindow calls
	next             int
	full             bool
}

func newCounter(version string, window int) *counter {
	return &counter{version: version, durations: make([]time.Duration, window)}
}

func (k *counter) add(o inference.Observation) {
	k.requests += int64(o.Rows)
	if o.Err != nil {
		k.errors += int64(o.Rows)
	}
	k.durations[k.next] = o.Duration
	k.next++
	if k.next == len(k.durations) {
		k.next, k.full = 0, true
	}
}

func (k *counter) stats() VersionStats {
	s := VersionStats{Version: k.version, Requests: k.requests, Errors: k.errors}
	if k.requests > 0 {
		s.ErrorRate = float64(k.errors) / float64(k.requests)
	}
	n := k.next
	if k.full {
		n = len(k.durations)
	}
	if n > 0 {
		d := slices.Clone(k.durations[:n])
		slices.Sort(d)
		s.P99 = d[min(n-1, (n*99+99)/100-1)] // nearest rank
		s.Calls = n
	}
	return s
}

// ObserveInference feeds the comparison; the forecaster calls it after
// every model call (inference.Observer).
func (c *Controller) ObserveInference(o inference.Observation) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	switch {
	case c.cand != nil && o.Version == c.cand.version && o.Role != inference.RoleStable:
		c.cand.add(o)
	case c.stable != nil && o.Version == c.stable.version && o.Role == inference.RoleStable:
		c.stable.add(o)
	}
}

// resetStats starts the candidate's counters of a new phase; the stable
// version's counters run over the whole rollout (at 100 % it gets no traffic
// of its own) and are reset only at the start (all).
func (c *Controller) resetStats(candidate, stable string, all bool) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	c.cand = newCounter(candidate, c.opts.LatencyWindow)
	if all || c.stable == nil {
		c.stable = newCounter(stable, c.opts.LatencyWindow)
	}
}

func (c *Controller) snapshotStats() (cand, stable VersionStats) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	if c.cand != nil {
		cand = c.cand.stats()
	}
	if c.stable != nil {
		stable = c.stable.stats()
	}
	return cand, stable
}

// freezeStats keeps the final comparison in the status and stops counting.
func (c *Controller) freezeStats() {
	cand, stable := c.snapshotStats()
	cand.MAPE, cand.MAPESamples = c.cur.CandidateStats.MAPE, c.cur.CandidateStats.MAPESamples
	stable.MAPE, stable.MAPESamples = c.cur.StableStats.MAPE, c.cur.StableStats.MAPESamples
	c.cur.CandidateStats, c.cur.StableStats = cand, stable
	c.statsMu.Lock()
	c.cand, c.stable = nil, nil
	c.statsMu.Unlock()
}

type metrics struct {
	phase, percent, shadow prometheus.Gauge
	started                prometheus.Counter
	finished               *prometheus.CounterVec
	errorRate              *prometheus.GaugeVec
	p99                    *prometheus.GaugeVec
	mape                   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		phase: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_rollout_phase",
			Help: "Phase of the model rollout in progress (1, 2, …); 0 when none.",
		}),
		percent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_rollout_percent",
			Help: "Share of the regions (percent) given to the candidate model; 0 when no rollout.",
		}),
		shadow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_rollout_shadow",
			Help: "1 when the rollout in progress is in shadow mode (the candidate is never served).",
		}),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_rollouts_started_total",
			Help: "Model rollouts started.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_rollouts_finished_total",
			Help: "Model rollouts finished, by outcome (promoted, rolled_back).",
		}, []string{"outcome"}),
		errorRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_rollout_error_rate",
			Help: "Inference failure rate per role (candidate in the current phase, stable since the start) at the last check.",
		}, []string{"role"}),
		p99: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_rollout_inference_p99_seconds",
			Help: "Inference p99 per role at the last rollout check.",
		}, []string{"role"}),
		mape: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_rollout_mape",
			Help: "MAPE on realised demand per role at the last rollout check (when known).",
		}, []string{"role"}),
	}
	if reg != nil {
		reg.MustRegister(m.phase, m.percent, m.shadow, m.started, m.finished, m.errorRate, m.p99, m.mape)
	}
	return m
}

func (m *metrics) export(cand, stable VersionStats) {
	for role, s := range map[string]VersionStats{"candidate": cand, "stable": stable} {
		m.errorRate.WithLabelValues(role).Set(s.ErrorRate)
		m.p99.WithLabelValues(role).Set(s.P99.Seconds())
		if s.MAPESamples > 0 {
			m.mape.WithLabelValues(role).Set(s.MAPE)
		}
	}
}
