package sink

import (
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/internal/testenv"
)

// benchEvents are live events (no backfill): one month, as in steady state.
func benchEvents(n int) []eventRow {
	evs := genEvents(n, 5)
	for i := range evs {
		if evs[i].Backfill {
			evs[i].Backfill = false
			evs[i].Timestamp = evs[i].ReceivedAt.Add(-time.Duration(i%3600) * time.Second)
		}
	}
	return evs
}

// BenchmarkSink measures rows/s from kfake into ClickHouse 18.16 with the
// materialized views attached (demand_minute, experiment_metrics_daily,
// sink_offsets) and the default batch size, delay and inserters. Each
// iteration starts a sink in a new group over a fresh database and ends
// when all the pre-produced events are inserted; the time includes joining
// the group.
func BenchmarkSink(b *testing.B) {
	const events = 200_000
	k := testenv.KafkaWith(b, kafkaOpts())
	produceEvents(b, k.Brokers, benchEvents(events))
	var elapsed time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		addr, db := testenv.ClickHouse(b)
		conn := openMigrated(b, addr, db)
		b.StartTimer()
		start := time.Now()
		s, stop := runSink(b, k.Brokers, conn, db, Options{
			GroupID: "bench-" + strconv.Itoa(i), BatchSize: 10_000, BatchDelay: 500 * time.Millisecond, Inserters: 2,
		})
		for s.Status().RowsInserted < events {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed += time.Since(start)
		b.StopTimer()
		stop()
		if n := rawCount(b, ctxT(b), conn); n != events {
			b.Fatalf("%d rows, want %d", n, events)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(events*b.N)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkInsertBlock measures the ClickHouse side alone: one block of
// 10,000 events into events_raw and its three materialized views per
// operation, sequentially.
func BenchmarkInsertBlock(b *testing.B) {
	addr, db := testenv.ClickHouse(b)
	conn := openMigrated(b, addr, db)
	evs := benchEvents(10_000)
	recs := make([]record[eventRow], len(evs))
	for i := range evs {
		v, err := evs[i].Marshal()
		if err != nil {
			b.Fatal(err)
		}
		row, err := decodeEvent(&kafka.Message{Value: v, Time: time.Now()})
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = record[eventRow]{topic: "user-events", partition: i % testPartitions, offset: int64(i), valid: true, row: row}
	}
	s, err := New([]string{"unused:9092"}, conn, db, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := ctxT(b)
	batch, err := s.events.externalTable()
	if err != nil {
		b.Fatal(err)
	}
	for iter := 0; b.Loop(); iter++ {
		for i := range recs {
			recs[i].offset += int64(len(recs))
			recs[i].row.EventID = evs[i].EventID + "-" + strconv.Itoa(iter) // new events: the insert keeps none it holds
		}
		if err := insert(ctx, s, s.events, recs, batch, s.queryID("events_raw")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(recs)*b.N)/b.Elapsed().Seconds(), "rows/s")
}
