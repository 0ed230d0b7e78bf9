// Package publish owns the background publisher of the records the service
// sends to Kafka after the fact: the audit records of quotes and the
// experiment exposures. Publish never blocks the caller; with a spool
// (package spool) a record survives a Kafka outage and a crash.
package publish

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/retry"
	"github.com/surgeworks/surge/spool"
)

// Options configures a Publisher. Zero values take the defaults.
type Options struct {
	// Buffer is how many records may wait for Kafka in memory without a
	// Spool (default 100,000); when it is full Publish refuses new records
	// (and counts them).
	Buffer int
	// BatchSize bounds the records of one WriteMessages call (default
	// 1,000); kafka-go sends them as batches of at most PartitionBatch per
	// partition.
	BatchSize int
	// PartitionBatch is the writer's batch per partition (default 64: at
	// 1,000 quotes/s a call carries a few records; see ingest.NewWriter
	// on why it is not BatchSize).
	PartitionBatch int
	// BatchTimeout is how long a partial batch waits for more records
	// (default 5 ms; kafka-go's own default of 1 s would delay every record).
	BatchTimeout time.Duration
	// Spool, when set, holds the records instead of the memory buffer:
	// Publish returns once the record is written to it, Run sends from it
	// and acknowledges what Kafka took, so a record survives a Kafka outage
	// (up to the spool's size) and a crash of the process (sent again
	// after the restart: at least once). Run closes it.
	Spool      *spool.Spool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Publisher sends records to Kafka in the background with acks from all
// in-sync replicas, keyed by region (Murmur2, as Java clients do). Publish
// never blocks; Run does the sending and retries with backoff while Kafka is
// unreachable.
type Publisher struct {
	w        *kafka.Writer
	opts     Options
	queue    chan kafka.Message
	inflight atomic.Int64 // records taken from the queue, not yet acknowledged

	sent, dropped, failures *prometheus.CounterVec
}

// New returns a publisher to the given brokers.
func New(brokers []string, opts Options) *Publisher {
	if opts.Buffer <= 0 {
		opts.Buffer = 100_000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.PartitionBatch <= 0 {
		opts.PartitionBatch = 64
	}
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = 5 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Publisher{
		w:    ingest.NewWriter(brokers, opts.PartitionBatch, opts.BatchTimeout),
		opts: opts,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_kafka_published_total", Help: "Records acknowledged by Kafka, by topic.",
		}, []string{"topic"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_kafka_publish_dropped_total", Help: "Records dropped because the publish buffer was full, by topic.",
		}, []string{"topic"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_kafka_publish_failures_total", Help: "Failed produce attempts (retried), by topic.",
		}, []string{"topic"}),
	}
	if opts.Spool == nil { // with a spool the records wait there
		p.queue = make(chan kafka.Message, opts.Buffer)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(p.sent, p.dropped, p.failures)
	}
	return p
}

// Publish queues a record; it never blocks. It reports false, and counts
// the record dropped, when the buffer (or the spool) is full: the caller
// decides (quotes refuses to answer a quote it cannot audit).
func (p *Publisher) Publish(topic, key string, value []byte) bool {
	if p.opts.Spool != nil {
		if err := p.opts.Spool.Append(spool.Record{Topic: topic, Key: key, Value: value}); err != nil {
			p.dropped.WithLabelValues(topic).Inc()
			if !errors.Is(err, spool.ErrFull) {
				p.opts.Logger.Error("audit spool: append failed", "err", err)
			}
			return false
		}
		return true
	}
	select {
	case p.queue <- kafka.Message{Topic: topic, Key: []byte(key), Value: value}:
		return true
	default:
		p.dropped.WithLabelValues(topic).Inc()
		return false
	}
}

// Pending is the number of records not yet acknowledged by Kafka (without
// a spool).
func (p *Publisher) Pending() int { return len(p.queue) + int(p.inflight.Load()) }

// Run sends queued records until ctx ends, then flushes what is queued for
// up to 5 seconds and closes the writer (and the spool: what it still
// holds is sent after the next start).
func (p *Publisher) Run(ctx context.Context) error {
	if p.opts.Spool != nil {
		return p.runSpool(ctx)
	}
	batch := make([]kafka.Message, 0, p.opts.BatchSize)
	for {
		select {
		case <-ctx.Done():
			p.drain()
			return ingest.CloseWriter(p.w)
		case m := <-p.queue:
			batch = append(batch[:0], m)
		}
	fill:
		for len(batch) < p.opts.BatchSize {
			select {
			case m := <-p.queue:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		p.inflight.Store(int64(len(batch)))
		err := p.produce(ctx, batch)
		p.inflight.Store(0)
		if err != nil { // ctx ended
			p.requeue(batch)
			p.drain()
			return ingest.CloseWriter(p.w)
		}
	}
}

// produce writes a batch, retrying with backoff (100 ms to 5 s, ±20 %)
// until Kafka takes it or ctx ends (the error is then ctx's).
func (p *Publisher) produce(ctx context.Context, batch []kafka.Message) error {
	err := retry.Forever[any](ctx, retry.Options{
		MaxBackoff: 5 * time.Second,
		OnRetry: func(err error, delay time.Duration) {
			p.failures.WithLabelValues(batch[0].Topic).Inc()
			p.opts.Logger.Warn("kafka publish failed; retrying", "records", len(batch), "backoff", delay, "err", err)
		},
	}).Run(func() error { return p.w.WriteMessages(ctx, batch...) })
	if err == nil {
		p.count(batch)
	}
	return err
}

func (p *Publisher) count(batch []kafka.Message) {
	for _, m := range batch {
		p.sent.WithLabelValues(m.Topic).Inc()
	}
}

func (p *Publisher) requeue(batch []kafka.Message) {
	for _, m := range batch {
		p.Publish(m.Topic, string(m.Key), m.Value)
	}
}

// drain sends what is queued, for at most 5 seconds.
func (p *Publisher) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(p.queue) > 0 && ctx.Err() == nil {
		batch := make([]kafka.Message, 0, p.opts.BatchSize)
		for len(batch) < p.opts.BatchSize && len(p.queue) > 0 {
			batch = append(batch, <-p.queue)
		}
		if err := p.w.WriteMessages(ctx, batch...); err != nil {
			p.opts.Logger.Warn("kafka publish at shutdown failed", "records", len(batch), "err", err)
			return
		}
		p.count(batch)
	}
}

// runSpool sends the spool's records in order, a batch at a time, retrying
// a batch until Kafka takes it, and acknowledges each batch in the spool.
func (p *Publisher) runSpool(ctx context.Context) error {
	sp := p.opts.Spool
	defer func() { _ = sp.Close() }()
	send := func(ctx context.Context, recs []spool.Record, pos spool.Position) bool {
		batch := make([]kafka.Message, len(recs))
		for i, r := range recs {
			batch[i] = kafka.Message{Topic: r.Topic, Key: []byte(r.Key), Value: r.Value}
		}
		if p.produce(ctx, batch) != nil {
			return false // ctx ended; the records stay in the spool
		}
		if err := sp.Ack(pos); err != nil {
			p.opts.Logger.Error("audit spool: acknowledge", "err", err)
		}
		return true
	}
	for {
		recs, pos, err := sp.Read(ctx, p.opts.BatchSize)
		if err != nil || !send(ctx, recs, pos) {
			break
		}
	}
	// Shutdown: send what the spool holds for up to 5 s; the rest waits
	// for the next start.
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for sp.Pending() {
		recs, pos, err := sp.Read(dctx, p.opts.BatchSize)
		if err != nil || !send(dctx, recs, pos) {
			p.opts.Logger.Warn("kafka publish at shutdown incomplete; the rest is sent after the next start", "err", err)
			break
		}
	}
	return ingest.CloseWriter(p.w)
}
