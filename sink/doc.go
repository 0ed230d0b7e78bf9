// Package sink moves Kafka records into ClickHouse exactly once: the events
// of ingest.EventTopics into events_raw (whose materialized views keep
// demand_minute, experiment_metrics_daily, experiment_users, experiment_minute
// and user_bookings_minute), the audit records of pricing-decisions into
// pricing_decisions, and the exposures of the experiments topic into
// experiment_exposures.
//
// # Exactly once without insert deduplication
//
// ClickHouse 18.16 cannot deduplicate inserts into these tables, so the
// guarantee is built from three rules:
//
//  1. Every row carries its Kafka topic, partition and offset, and the rows
//     of one batch — consecutive records of one or more partitions — are
//     inserted as ONE block (one INSERT, one data packet). A block lands as
//     a whole or not at all when the sink dies at any point.
//  2. A materialized view on each target table records, in the same INSERT,
//     the highest offset of every (topic, partition) in the block into the
//     small table sink_offsets. That is where the sink resumes: on every
//     (re)assignment of a partition it reads max(max_offset) and starts
//     reading Kafka right after it. Kafka's committed offsets are never
//     read; they are still committed after each insert so that lag is
//     visible to Kafka tools. A crash between the insert and the commit
//     therefore cannot double count, and a crash before the insert cannot
//     lose anything: the records are read again.
//  3. An insert whose outcome is unknown (timeout, connection lost, server
//     restart) is not blindly retried: the sink waits until the server no
//     longer runs that query (every insert has a query id), reads
//     sink_offsets again and re-sends only the records ClickHouse does not
//     hold. Likewise, a new generation waits for inserts of the group that
//     started before it (a previous owner's) before reading its offsets.
//
// # Exactly once per eventId
//
// Offsets make the sink exactly once per Kafka record; a resend can put
// the same event on Kafka twice (a produce that timed out but was written,
// kafka-go retrying inside one call, a client's retry after Redis lost the
// intake's dedup keys in a crash). So before each insert the sink looks up
// the batch's eventIds in events_raw itself — the state that is exactly as
// durable as the rows — and drops those it holds (and repeats within the
// batch), counted in surge_sink_duplicates_total. A resend is the same
// event (same eventId, regionId and timestamp), so the lookup is an index
// range on the table's key (region_id, event_time) whatever the age of the
// first copy: a resend is recognised for as long as events_raw keeps the
// original, and the lookup costs no memory. The copies of an event share
// its key (the region), hence its partition and its batcher, so the lookup
// and the insert that follows cannot race with another insert of this
// sink. Against another member — one that stalled past its session timeout
// between its lookup and its insert while this one took its partitions
// over — the insert is fenced by the server: the rows travel as an
// external table and INSERT ... SELECT keeps only those whose eventId
// events_raw does not hold, decided in the insert itself. The lookup
// before it still finds what to count (surge_sink_duplicates_total) and
// what to repair. pricing_decisions is checked likewise by quote id.
//
// # Repairing the views
//
// ClickHouse writes one INSERT as one part per table, one after the other:
// events_raw first, then each view in the order of the views' names, and
// the views that feed sink_offsets (named zz_… for this reason) last. A
// server killed in between leaves events_raw with the block and some views
// without it, and sink_offsets without it, so the sink reads the block
// again. The lookup then finds the events at their own offsets: they are
// not inserted again, and every view of events_raw (read from
// system.tables: a materialized view into a SummingMergeTree) is set right
// for the keys they touch by inserting, per key, the difference between
// what the view's own SELECT gives over events_raw and what the view holds
// (surge_sink_view_repairs_total). Inserts of events_raw are held off
// during a repair. A block spanning two months is two parts of events_raw;
// the lookup handles any subset.
//
// What is not covered: two members inserting the same records in the same
// instant (the server checks each insert against the parts it sees when
// it starts), a repair racing with the insert of a member that is no
// longer in the group, copies of an event on two partitions (the topic's
// partition count changed between them), and experiment_exposures
// (exactly once per record only).
// sink_offsets must not be truncated without events_raw: the sink would
// read everything again (and drop it all as duplicates).
//
// # On a cluster
//
// With the schema on a ClickHouse cluster (docs/clickhouse-cluster.md) the
// tables are Distributed over replicated <table>_local tables sharded by
// kafka_partition, inserts are synchronous and not deduplicated by block
// hash (analytics.Options.Cluster), the views fire on the local tables of
// the server that receives a block. The rules above hold per shard; the
// sink syncs its server's replicas (SYSTEM SYNC REPLICA) before it reads
// its positions, so that it sees what members on other servers inserted,
// and repairs the local views as views of the Distributed tables.
//
// Records that are not valid JSON events or decisions (they cannot come
// from the intake, which validates) are skipped, counted in
// surge_sink_invalid_records_total and logged; their offsets still count
// as consumed. Records that expired from Kafka (retention) before the sink
// read them cannot be inserted: the gap is counted in
// surge_sink_skipped_offsets_total and reported as the last error.
//
// # Consumer group
//
// The group runs on package consumer (kafka-go's ConsumerGroup and
// Generation API, shared with the features consumer) rather than a group
// Reader: a group Reader starts from the committed offsets, while the sink
// must start each partition where ClickHouse says. For every generation it
// reads the positions from ClickHouse, reads each assigned partition from
// that position (consumer.ReadPartition), fans the decoded records into the
// batchers of their table, and commits after each insert (and, at the
// start of a generation, the positions ClickHouse is ahead with). The group
// does not join the next generation before the current one's work has
// returned, so an insert in flight at a rebalance finishes first.
//
// A batch holds at most BatchSize rows and is sent at the latest BatchDelay
// after its first record. A batch covers several partitions — each table's
// assigned partitions are shared among Inserters batchers, a partition
// always to the same one — which keeps the number of inserts (and of parts
// to merge) small while two inserts overlap their fixed cost; the inserts
// of one partition never overlap, so each step above holds per partition.
// While ClickHouse is down the same batch is retried with capped
// exponential backoff (failsafe-go) and never skipped; the readers then stop (bounded
// queues) and the lag grows, visible as surge_sink_lag and in Status.
package sink
