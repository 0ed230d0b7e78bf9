package live

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	active    prometheus.Gauge
	refused   *prometheus.CounterVec
	received  prometheus.Counter
	sent      prometheus.Counter
	conflated prometheus.Counter
	slow      prometheus.Counter
	delivery  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "surge_live_subscriptions",
			Help: "Live subscriptions open on this instance."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "surge_live_subscriptions_refused_total",
			Help: "Subscriptions refused over a limit, by limit (connection, instance)."}, []string{"limit"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "surge_live_changes_received_total",
			Help: "Surge changes received from Redis pub/sub."}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "surge_live_updates_sent_total",
			Help: "Surge updates handed to subscribers (snapshots included)."}),
		conflated: prometheus.NewCounter(prometheus.CounterOpts{Name: "surge_live_updates_conflated_total",
			Help: "Surge updates replaced by a newer one for the same pair before the subscriber read them."}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{Name: "surge_live_slow_subscribers_total",
			Help: "Subscriptions ended because the subscriber stayed behind."}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "surge_live_delivery_seconds",
			Help:    "From a surge change's quote to its hand-over to a subscriber.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.refused, m.received, m.sent, m.conflated, m.slow, m.delivery)
	}
	return m
}
