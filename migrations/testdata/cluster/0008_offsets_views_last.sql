DROP TABLE IF EXISTS ${database}.events_raw_offsets_mv ON CLUSTER surge;

DROP TABLE IF EXISTS ${database}.pricing_decisions_offsets_mv ON CLUSTER surge;

DROP TABLE IF EXISTS ${database}.experiment_exposures_offsets_mv ON CLUSTER surge;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_events_raw_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.events_raw_local
GROUP BY kafka_topic, kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_pricing_decisions_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.pricing_decisions_local
GROUP BY kafka_topic, kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.zz_experiment_exposures_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.experiment_exposures_local
GROUP BY kafka_topic, kafka_partition;
