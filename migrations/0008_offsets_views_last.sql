-- The sink's resume point must be written after every other view of its
-- table. ClickHouse writes one INSERT's parts one by one: the table's own
-- part first, then one part per materialized view, in the order of the
-- views' names (18.16 keeps a table's dependent views in a sorted set). A
-- server killed between two of those parts leaves some views without the
-- block; the sink repairs them (package sink, "Repairing the views") only
-- if it reads the block again, i.e. if sink_offsets did NOT get it. So the
-- views feeding sink_offsets are renamed to sort after every other view
-- (zz_ prefix) and recreated last.
DROP TABLE IF EXISTS ${database}.events_raw_offsets_mv;
DROP TABLE IF EXISTS ${database}.pricing_decisions_offsets_mv;
DROP TABLE IF EXISTS ${database}.experiment_exposures_offsets_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_events_raw_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.events_raw
GROUP BY kafka_topic, kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_pricing_decisions_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.pricing_decisions
GROUP BY kafka_topic, kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_experiment_exposures_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.experiment_exposures
GROUP BY kafka_topic, kafka_partition;
