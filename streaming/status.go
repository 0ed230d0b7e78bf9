package streaming

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Status is a snapshot of the consumer for operators (GraphQL
// ingestionStatus). It is refreshed every FlushInterval.
type Status struct {
	GroupID string
	// Partitions assigned to this consumer in the current generation,
	// ordered by topic and partition.
	Partitions []PartitionStatus
	// Regions with state in memory.
	Regions int
	// Rebuilding is true while the windows are rebuilt from Kafka after a
	// (re)start or rebalance: nothing is written to Redis meanwhile.
	Rebuilding bool

	// Counts since the process started. Messages re-read below the
	// committed offsets to rebuild the windows are not counted again.
	EventsProcessed  uint64 // every message read, whatever its fate
	LateEvents       uint64 // behind the watermark (Grace) or the kept window: not in the live features
	BackfillSkipped  uint64 // Event.Backfill: analytics only
	InvalidEvents    uint64 // undecodable, without region or time, or too far in the future
	RedisWriteErrors uint64 // failed pipelined writes (retried)

	LastFlush   time.Time // last successful Redis write
	LastCommit  time.Time // last successful offset commit
	LastError   string    // last error of any kind (Kafka, Redis, commit), "" if none yet
	LastErrorAt time.Time
}

// PartitionStatus is the position of one assigned topic partition.
type PartitionStatus struct {
	Topic     string
	Partition int
	// Committed is the group's committed offset (the next offset a restart
	// resumes from); -1 when the group has none yet.
	Committed int64
	// Position is the next offset to be applied to the windows.
	Position int64
	// HighWatermark is the partition's end offset as last seen in a fetch
	// response (or at assignment).
	HighWatermark int64
	// Lag is HighWatermark − Committed (HighWatermark − Position while
	// nothing is committed): messages not yet reflected in Redis for sure.
	Lag        int64
	LateEvents uint64
}

// Lag is the total lag over the assigned partitions.
func (s Status) Lag() int64 {
	var n int64
	for _, p := range s.Partitions {
		n += p.Lag
	}
	return n
}

type metrics struct {
	processed   *prometheus.CounterVec
	late        *prometheus.CounterVec
	backfill    *prometheus.CounterVec
	invalid     *prometheus.CounterVec
	replayed    prometheus.Counter
	writes      prometheus.Counter
	writeErrors prometheus.Counter
	commits     *prometheus.CounterVec
	resets      prometheus.Counter
	flush       prometheus.Histogram
	freshness   prometheus.Histogram
	lag         *prometheus.GaugeVec
	regions     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_stream_events_processed_total",
			Help: "Events read by the streaming feature consumer, by topic (whatever their fate; replays below the committed offset excluded).",
		}, []string{"topic"}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_stream_late_events_total",
			Help: "Events later than the watermark (newest event time of the region on the topic minus the grace) or older than the kept window: not in the live features, by topic.",
		}, []string{"topic"}),
		backfill: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_stream_backfill_skipped_total",
			Help: "Backfill events skipped by the streaming feature consumer (they reach ClickHouse only), by topic.",
		}, []string{"topic"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_stream_invalid_events_total",
			Help: "Messages the streaming feature consumer could not use, by reason (decode, no_region, no_timestamp, future).",
		}, []string{"reason"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_stream_replayed_events_total",
			Help: "Messages re-read below the committed offsets to rebuild the windows after a start or rebalance.",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_stream_feature_writes_total",
			Help: "Region feature hashes written to Redis.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_stream_redis_write_errors_total",
			Help: "Failed pipelined feature writes to Redis (retried with backoff; offsets stay uncommitted).",
		}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_stream_commits_total",
			Help: "Offset commits of the streaming feature consumer, by result (ok, error).",
		}, []string{"result"}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_stream_state_rebuilds_total",
			Help: "Times the in-memory windows were dropped and rebuilt from Kafka (start, rebalance, lost position).",
		}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "surge_stream_flush_duration_seconds",
			Help:    "Duration of one pipelined Redis write of the dirty regions' features.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		freshness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "surge_stream_feature_freshness_seconds",
			Help:    "At each successful feature write of a region: now minus the intake time (ReceivedAt) of the oldest event it newly reflects.",
			Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60},
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_stream_consumer_lag",
			Help: "Messages between the partition's high watermark and the committed offset of the features consumer group, by topic and partition.",
		}, []string{"topic", "partition"}),
		regions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_stream_regions",
			Help: "Regions with streaming window state in memory.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.processed, m.late, m.backfill, m.invalid, m.replayed, m.writes, m.writeErrors,
			m.commits, m.resets, m.flush, m.freshness, m.lag, m.regions)
	}
	return m
}

func partitionLabel(p int) string { return strconv.Itoa(p) }
