-- The audit trail: one row per record of the pricing-decisions topic (the
-- JSON the quotes package publishes for every quote), with the full record
-- in `record` and the fields worth filtering on as columns. Ordered by
-- quote_id so that a quote is found by an index lookup in each monthly
-- partition (quote ids are UUIDv7, so this order is also roughly time order).
-- kafka_* give the sink its exactly-once resume point, like events_raw.
CREATE TABLE IF NOT EXISTS ${database}.pricing_decisions (
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
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY quote_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.pricing_decisions_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.pricing_decisions
GROUP BY kafka_topic, kafka_partition;
