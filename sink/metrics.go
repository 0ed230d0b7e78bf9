package sink

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lag           *prometheus.GaugeVec
	rows          *prometheus.CounterVec
	insertErrors  *prometheus.CounterVec
	insertSeconds *prometheus.HistogramVec
	batchRows     *prometheus.HistogramVec
	invalid       *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	commitErrors  prometheus.Counter
	duplicates    *prometheus.CounterVec
	repairs       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_sink_lag",
			Help: "Records of a partition not yet in ClickHouse (high watermark - next offset), for the partitions assigned to this instance.",
		}, []string{"topic", "partition"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_sink_rows_total", Help: "Rows inserted into ClickHouse, by table (rate() gives rows/s).",
		}, []string{"table"}),
		insertErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_sink_insert_errors_total", Help: "Failed insert attempts and failed checks of what an insert left (both retried), by table.",
		}, []string{"table"}),
		insertSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "surge_sink_insert_duration_seconds", Help: "Duration of successful inserts of one block, by table.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}, []string{"table"}),
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "surge_sink_batch_rows", Help: "Rows per inserted block, by table.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}, []string{"table"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_sink_invalid_records_total", Help: "Records skipped because they could not be decoded, by topic.",
		}, []string{"topic"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_sink_skipped_offsets_total", Help: "Offsets Kafka did not deliver (records expired by retention before they reached ClickHouse), by topic.",
		}, []string{"topic"}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_sink_commit_errors_total", Help: "Failed commits of consumed offsets to Kafka (lag reporting only; retried at the next batch).",
		}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_sink_duplicates_total", Help: "Records not inserted because the table already held their key (eventId, quoteId) from another Kafka record, by table.",
		}, []string{"table"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_sink_view_repairs_total", Help: "Events found in events_raw without the sink knowing (ClickHouse stopped in the middle of an insert) whose views were repaired.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.lag, m.rows, m.insertErrors, m.insertSeconds, m.batchRows, m.invalid, m.skipped, m.commitErrors, m.duplicates, m.repairs)
	}
	return m
}

func (m *metrics) setLag(p tp, lag int64) {
	if lag < 0 {
		return
	}
	m.lag.WithLabelValues(p.topic, strconv.Itoa(p.partition)).Set(float64(lag))
}

func (m *metrics) deleteLag(p tp) {
	m.lag.DeleteLabelValues(p.topic, strconv.Itoa(p.partition))
}
