CREATE TABLE IF NOT EXISTS ${database}.pricing_decisions_local ON CLUSTER surge (
    quote_id        String,
    trace_id        String,
    at              DateTime('UTC'),
    region_id       String,
    product_type    String,
    user_hash       String,
    multiplier      Float64,
    price           Float64,
    currency        String,
    rule_version    UInt32,
    model_version   String,
    forecast_source String,
    degraded        UInt8,
    record          String,
    kafka_topic     String,
    kafka_partition UInt32,
    kafka_offset    UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.pricing_decisions_local', '{replica}')
PARTITION BY toYYYYMM(at)
ORDER BY quote_id;

CREATE TABLE IF NOT EXISTS ${database}.pricing_decisions ON CLUSTER surge AS ${database}.pricing_decisions_local
ENGINE = Distributed(surge, ${database}, pricing_decisions_local, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.pricing_decisions_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.pricing_decisions_local
GROUP BY kafka_topic, kafka_partition;
