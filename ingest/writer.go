package ingest

import (
	"time"

	"github.com/segmentio/kafka-go"
)

// NewEventWriter returns the synchronous Kafka writer the intake needs: acks
// from all in-sync replicas, Murmur2 partitioning by key (as Java clients
// do), batches of up to EventPartitionBatch records (and kafka-go's 1 MiB)
// per partition with a 2 ms linger (kafka-go's default of 1 s would delay
// every request), 3 attempts with 5 s timeouts, 1.5 s apart at least
// (longer than the age of the metadata that routes around a lost broker,
// see newTransport), its own connection pool. Messages carry their topic. Close it after the Intake's
// last use.
func NewEventWriter(brokers []string) *EventWriter {
	w := NewWriter(brokers, EventPartitionBatch, 2*time.Millisecond)
	w.ReadTimeout = 5 * time.Second
	return &EventWriter{w}
}

// EventPartitionBatch is the intake writer's batch per partition: a
// request of 1,000 events spread over the default 6 partitions fills about
// 170 of it; a region hot enough to fill one partition with more is sent as
// several produce requests.
const EventPartitionBatch = 256

// NewWriter returns a producer as the intake's and the publisher's: acks
// from all in-sync replicas, Murmur2 partitioning by key, batches of up to
// batchSize records per partition lingering batchTimeout, 3 attempts with
// 5 s timeouts at least 0.5 s apart, and its own connection pool
// (newTransport). Close it with CloseWriter.
//
// kafka-go allocates room for batchSize messages (about 150 bytes each)
// for every partition batch it opens, however few it ends up holding, so
// batchSize should be the usual batch of one partition, not the largest
// call: with 1,000 per partition, a request of 1,000 events over 6
// partitions allocated 6 × 150 KB, more than the events themselves.
func NewWriter(brokers []string, batchSize int, batchTimeout time.Duration) *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(brokers...),
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchSize:       batchSize,
		BatchTimeout:    batchTimeout,
		MaxAttempts:     3,
		WriteBackoffMin: writeBackoffMin,
		WriteBackoffMax: writeBackoffMax,
		WriteTimeout:    5 * time.Second,
		Transport:       newTransport(),
	}
}

// The producers' backoff between attempts, see newTransport.
const (
	writeBackoffMin = 500 * time.Millisecond
	writeBackoffMax = time.Second
)

// EventWriter is the intake's writer (NewEventWriter).
type EventWriter struct{ *kafka.Writer }

// Close flushes and closes the writer and its connection pool.
func (w *EventWriter) Close() error { return CloseWriter(w.Writer) }

// CloseWriter closes a writer of NewWriter and the transport that
// kafka-go's Close leaves open (with its metadata poll).
func CloseWriter(w *kafka.Writer) error {
	err := w.Close()
	w.Transport.(*kafka.Transport).CloseIdleConnections()
	return err
}

// newTransport is the connection pool of a producer. kafka-go routes a
// produce by its cached metadata and refreshes that only on a timer (its
// default: every 6 s at most), never on an error: with a broker gone, every
// produce to the partitions it led fails until the refresh. A 1 s TTL over
// our topics only (not the whole cluster's), and retries that span more
// than that (kafka-go waits attempt² × writeBackoffMin, at most
// writeBackoffMax: 0.5 s, then 1 s), keep produces succeeding through a
// broker's loss (TestThreeBrokersOneStopped in package sink).
func newTransport() *kafka.Transport {
	return &kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: time.Second, MetadataTopics: Topics}
}
