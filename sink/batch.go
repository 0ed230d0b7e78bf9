package sink

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/failsafe-go/failsafe-go"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/surgeworks/surge/consumer"
)

// readPartition reads one partition from start and sends its records,
// decoded, to out until ctx ends.
func readPartition[R any](ctx context.Context, s *Sink, t *table[R], p tp, start int64, out chan<- record[R]) {
	expect := start // the offset the next record should have
	consumer.ReadPartition(ctx, consumer.ReaderOptions{
		Brokers: s.brokers, MaxBytes: 16 << 20, MaxWait: time.Second, QueueCapacity: 1000,
		// A position past the end of the partition (the topic was
		// recreated?) is reported rather than retried silently. One before
		// its start is moved to the start by kafka-go; the gap is reported
		// below.
		OffsetOutOfRangeError: true,
		MinBackoff:            s.opts.MinBackoff, MaxBackoff: s.opts.MaxBackoff,
		Logger:  s.log,
		OnError: func(err error) { s.fail(fmt.Sprintf("read %s/%d", p.topic, p.partition), err) },
	}, p.topic, p.partition, start, func(m kafka.Message) bool {
		if m.Offset > expect {
			s.gap(p, expect, m.Offset)
		}
		expect = m.Offset + 1
		rec := record[R]{topic: m.Topic, partition: m.Partition, offset: m.Offset}
		if row, err := t.decode(&m); err != nil {
			s.invalidRecord(p, m.Offset, err)
		} else {
			rec.row, rec.valid = row, true
		}
		select {
		case out <- rec:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// gap reports offsets [from, to) that Kafka did not deliver: on the sink's
// topics (not compacted, written without transactions) they expired by
// retention before they reached ClickHouse.
func (s *Sink) gap(p tp, from, to int64) {
	s.m.skipped.WithLabelValues(p.topic).Add(float64(to - from))
	s.fail(fmt.Sprintf("read %s/%d", p.topic, p.partition),
		fmt.Errorf("offsets %d to %d were not delivered by Kafka (expired before they reached ClickHouse?): skipped", from, to-1))
}

// invalidRecord counts a record that cannot be decoded, logging at most one
// every 10 s.
func (s *Sink) invalidRecord(p tp, offset int64, err error) {
	s.invalid.Add(1)
	s.m.invalid.WithLabelValues(p.topic).Inc()
	s.mu.Lock()
	logIt := time.Since(s.lastInvalid) >= 10*time.Second
	if logIt {
		s.lastInvalid = time.Now()
	}
	s.mu.Unlock()
	if logIt {
		s.log.Warn("sink: skipping invalid record", "topic", p.topic, "partition", p.partition, "offset", offset, "err", err)
	}
}

// runBatcher collects the records of one table into batches of at most
// BatchSize rows, each sent at the latest BatchDelay after its first record,
// and inserts them. When ctx ends it tries once to insert the batch at hand.
func runBatcher[R any](ctx context.Context, s *Sink, t *table[R], gen *consumer.Generation, in <-chan record[R]) {
	var pending []record[R] // grows to what the rate fills within BatchDelay, then reused
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// Offsets inserted but not yet committed to Kafka: a failed commit is
	// retried with the next batch, or after commitRetry when none comes.
	uncommitted := map[tp]int64{}
	retry := time.NewTicker(commitRetry)
	defer retry.Stop()
	var batch *ext.Table // the fenced insert's external table, reused
	if t.fenced != nil {
		var err error
		if batch, err = t.externalTable(); err != nil {
			s.fail("insert "+t.name, err)
			return
		}
	}
	commit := func() {
		if len(uncommitted) == 0 {
			return
		}
		offsets := map[string]map[int]int64{}
		for p, next := range uncommitted {
			if offsets[p.topic] == nil {
				offsets[p.topic] = map[int]int64{}
			}
			offsets[p.topic][p.partition] = next
		}
		if err := gen.Commit(offsets); err != nil {
			// Only lag as Kafka tools see it depends on it.
			s.m.commitErrors.Inc()
			s.log.Debug("sink: commit offsets", "err", err)
			return
		}
		clear(uncommitted)
	}
	flush := func(final bool) bool {
		timer.Stop()
		nexts, ok := flushBatch(ctx, s, t, pending, batch, final)
		pending = pending[:0]
		if ok {
			maps.Copy(uncommitted, nexts)
			commit()
		}
		return ok
	}
	for {
		select {
		case <-ctx.Done():
			if len(pending) > 0 {
				flush(true)
			}
			return
		case r := <-in:
			pending = append(pending, r)
			if len(pending) == 1 {
				timer.Reset(s.opts.BatchDelay)
			}
			if len(pending) >= s.opts.BatchSize && !flush(false) {
				return
			}
		case <-timer.C:
			if len(pending) > 0 && !flush(false) {
				return
			}
		case <-retry.C:
			commit()
		}
	}
}

// commitRetry is how often a failed commit is retried while no batch comes.
const commitRetry = 5 * time.Second

// flushBatch inserts recs as one block, retrying with backoff until it
// lands. After a failed attempt it waits until the server no longer runs
// that insert, reads what ClickHouse holds and drops the records already
// there, so that an insert that failed on the client but landed on the
// server is not repeated. It returns the next offset of each partition of
// the batch, or false, with the batch possibly not inserted, when ctx
// ended; final allows a single attempt. batch is the external table of a
// fenced insert (nil for the other tables).
func flushBatch[R any](ctx context.Context, s *Sink, t *table[R], recs []record[R], batch *ext.Table, final bool) (map[tp]int64, bool) {
	type span struct{ first, last int64 }
	spans := map[tp]span{}
	var rows int
	for _, r := range recs {
		p := tp{r.topic, r.partition}
		sp, ok := spans[p]
		if !ok {
			sp.first = r.offset
		}
		sp.last = r.offset
		spans[p] = sp
		if r.valid {
			rows++
		}
	}
	// One attempt: after a failed one, wait until the server no longer runs
	// it and keep only what ClickHouse does not hold; drop what the table
	// holds by key; insert the rest. final allows a single attempt.
	var lastQuery string
	attempt := func(first bool) (struct{}, error) {
		if !first {
			held, err := s.reconcile(ctx, lastQuery)
			if err != nil {
				return struct{}{}, fmt.Errorf("check what landed: %w", err)
			}
			recs = notHeld(recs, held)
		}
		if t.dedup != nil && countValid(recs) > 0 {
			dups, err := t.dedup(ctx, s, recs)
			if err != nil {
				return struct{}{}, fmt.Errorf("look for duplicates: %w", err)
			}
			if dups > 0 {
				rows -= dups
				s.duplicates.Add(uint64(dups))
				s.m.duplicates.WithLabelValues(t.name).Add(float64(dups))
			}
		}
		if countValid(recs) == 0 {
			return struct{}{}, nil
		}
		lastQuery = s.queryID(t.name)
		start := time.Now()
		if t.views {
			s.viewsMu.RLock()
		}
		err := insert(ctx, s, t, recs, batch, lastQuery)
		if t.views {
			s.viewsMu.RUnlock()
		}
		if err != nil {
			return struct{}{}, err
		}
		took := time.Since(start)
		s.m.insertSeconds.WithLabelValues(t.name).Observe(took.Seconds())
		s.log.Debug("sink: inserted", "table", t.name, "rows", countValid(recs), "took", took)
		return struct{}{}, nil
	}
	countFailure := func(error) { s.m.insertErrors.WithLabelValues(t.name).Inc() }
	if final {
		if _, err := attempt(true); err != nil {
			countFailure(err)
			s.fail("insert "+t.name, err)
			return nil, false
		}
	} else if _, err := retrying[struct{}](ctx, s, "insert "+t.name, countFailure).GetWithExecution(func(e failsafe.Execution[struct{}]) (struct{}, error) {
		return attempt(e.Attempts() == 1)
	}); err != nil {
		return nil, false // ctx ended
	}
	// Every valid record of the batch is now in ClickHouse exactly once.
	s.rows.Add(uint64(rows))
	s.m.rows.WithLabelValues(t.name).Add(float64(rows))
	s.m.batchRows.WithLabelValues(t.name).Observe(float64(rows))
	nexts := make(map[tp]int64, len(spans))
	for p, sp := range spans {
		s.setNext(p, sp.last+1)
		nexts[p] = sp.last + 1
	}
	s.mu.Lock()
	s.lastInsertAt = time.Now()
	s.mu.Unlock()
	return nexts, true
}

func countValid[R any](recs []record[R]) int {
	n := 0
	for i := range recs {
		if recs[i].valid {
			n++
		}
	}
	return n
}

// notHeld keeps the records past the offsets ClickHouse holds.
func notHeld[R any](recs []record[R], held map[tp]int64) []record[R] {
	out := recs[:0]
	for _, r := range recs {
		if last, ok := held[tp{r.topic, r.partition}]; ok && r.offset <= last {
			continue
		}
		out = append(out, r)
	}
	return out
}

// insert sends recs as one block under query id qid. The attempt is not
// cancelled when ctx ends (an insert in flight at a rebalance finishes), it
// is bounded by InsertTimeout.
func insert[R any](ctx context.Context, s *Sink, t *table[R], recs []record[R], batch *ext.Table, qid string) error {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.InsertTimeout)
	defer cancel()
	ictx = clickhouse.Context(ictx, clickhouse.WithQueryID(qid))
	if t.fenced != nil {
		batch.Block().Reset()
		query, args, err := t.fenced(s.db, batch, recs)
		if err != nil {
			return fmt.Errorf("fill %d rows: %w", len(recs), err)
		}
		if err := s.conn.Exec(clickhouse.Context(ictx, clickhouse.WithExternalTable(batch)), query, args...); err != nil {
			return fmt.Errorf("send %d rows: %w", len(recs), err)
		}
		return nil
	}
	b, err := s.conn.PrepareBatch(ictx, t.insertQuery(s.db))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if err := t.fill(b, recs); err != nil {
		_ = b.Abort()
		return fmt.Errorf("fill %d rows: %w", len(recs), err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("send %d rows: %w", len(recs), err)
	}
	return nil
}

// queryIDPrefix marks the inserts of this group in system.processes.
func (s *Sink) queryIDPrefix() string { return "surge-sink:" + s.opts.GroupID + ":" }

func (s *Sink) queryID(table string) string {
	return s.queryIDPrefix() + table + ":" + uuid.NewString()
}

// reconcile waits until the server no longer runs query qid, then returns
// the offsets ClickHouse holds.
func (s *Sink) reconcile(ctx context.Context, qid string) (map[tp]int64, error) {
	wait := 50 * time.Millisecond
	for {
		var n uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE query_id = ?", qid).Scan(&n); err != nil {
			return nil, fmt.Errorf("look for insert %s: %w", qid, err)
		}
		if n == 0 {
			return s.positions(ctx)
		}
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait = min(2*wait, time.Second)
	}
}

// awaitOlderInserts waits until the server runs no insert of this group
// that started before genStart.
func (s *Sink) awaitOlderInserts(ctx context.Context, genStart time.Time) error {
	prefix := s.queryIDPrefix()
	wait := 50 * time.Millisecond
	logged := false
	for {
		var n uint64
		err := s.conn.QueryRow(ctx,
			"SELECT count() FROM system.processes WHERE substring(query_id, 1, ?) = ? AND elapsed > ?",
			uint64(len(prefix)), prefix, time.Since(genStart).Seconds()).Scan(&n)
		if err != nil {
			return fmt.Errorf("look for running inserts: %w", err)
		}
		if n == 0 {
			return nil
		}
		if !logged {
			s.log.Info("sink: waiting for inserts of a previous generation to finish", "inserts", n)
			logged = true
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, time.Second)
	}
}

// positions returns the highest offset ClickHouse holds per partition,
// from sink_offsets (kept by materialized views in the same INSERT as the
// rows). On a cluster it first syncs this server's replicas.
func (s *Sink) positions(ctx context.Context) (map[tp]int64, error) {
	if err := s.syncReplicas(ctx); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, "SELECT kafka_topic, kafka_partition, max(max_offset) FROM "+s.db+".sink_offsets GROUP BY kafka_topic, kafka_partition")
	if err != nil {
		return nil, fmt.Errorf("read sink_offsets: %w", err)
	}
	defer rows.Close()
	out := map[tp]int64{}
	for rows.Next() {
		var (
			topic     string
			partition uint32
			offset    uint64
		)
		if err := rows.Scan(&topic, &partition, &offset); err != nil {
			return nil, fmt.Errorf("scan sink_offsets: %w", err)
		}
		out[tp{topic, int(partition)}] = int64(offset)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read sink_offsets: %w", err)
	}
	return out, nil
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
