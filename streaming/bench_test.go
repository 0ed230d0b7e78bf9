package streaming

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/ingest"
)

// BenchmarkConsume measures events/s through the consumer into Redis on
// kfake: b.N events over 50 regions (90 % user events, 10 % supply
// updates, event times advancing over 20 minutes) are produced first, then
// a consumer of a new group reads them all. events/s is b.N over the time
// from the start to the last event applied to the windows (group join
// included, reported apart as join-ms); the clock (ns/op) stops when every
// offset is committed, i.e. reflected in Redis, which adds up to
// MinWriteInterval + FlushInterval for the last writes (tail-ms).
func BenchmarkConsume(b *testing.B) {
	e := newEnv(b)
	const regions = 50
	start := time.Now().Add(-20 * time.Minute)
	step := 20 * time.Minute / time.Duration(b.N+1)
	types := []string{ingest.TypeSearch, ingest.TypeSearch, ingest.TypeSearch, ingest.TypeSearch, ingest.TypeSearch,
		ingest.TypeSearch, ingest.TypeBooking, ingest.TypeBooking, ingest.TypeCancel, ingest.TypeSupplyUpdate}
	batch := make([]kafka.Message, 0, 1000)
	flush := func() {
		if err := e.writer.WriteMessages(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range b.N {
		ev := ev(fmt.Sprintf("region-%02d", i%regions), types[i%len(types)], start.Add(time.Duration(i)*step), withSupply(float64(i%40)))
		if ev.Type != ingest.TypeSupplyUpdate {
			ev.AvailableSupply = nil
		}
		v, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, kafka.Message{Topic: ingest.TopicFor(ev.Type), Key: []byte(ev.RegionID), Value: v})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}

	b.ResetTimer()
	begin := time.Now()
	c, stop := e.start(Options{GroupID: fmt.Sprintf("bench-%d", b.N), Logger: slog.New(slog.DiscardHandler)}, nil)
	e.waitFor("partitions assigned", func() bool { return len(c.Status().Partitions) > 0 })
	joined := time.Since(begin)
	ends, _ := e.offsets(c.opts.GroupID)
	e.waitFor("every event read", func() bool {
		for _, p := range c.Status().Partitions {
			if p.Position < ends[p.Topic][p.Partition] {
				return false
			}
		}
		return true
	})
	read := time.Since(begin)
	e.waitCommitted(c)
	b.StopTimer()
	tail := time.Since(begin) - read
	stop()
	if st := c.Status(); st.EventsProcessed != uint64(b.N) || st.LateEvents != 0 {
		b.Fatalf("processed %d late %d, want %d and 0", st.EventsProcessed, st.LateEvents, b.N)
	}
	b.ReportMetric(float64(b.N)/read.Seconds(), "events/s")
	b.ReportMetric(float64(joined.Milliseconds()), "join-ms")
	b.ReportMetric(float64(tail.Milliseconds()), "tail-ms")
}
