CREATE TABLE IF NOT EXISTS ${database}.sink_offsets_local ON CLUSTER surge (
    kafka_topic     String,
    kafka_partition UInt32,
    max_offset      UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/${database}.sink_offsets_local', '{replica}', max_offset)
ORDER BY (kafka_topic, kafka_partition);

CREATE TABLE IF NOT EXISTS ${database}.sink_offsets ON CLUSTER surge AS ${database}.sink_offsets_local
ENGINE = Distributed(surge, ${database}, sink_offsets_local, kafka_partition);

CREATE TABLE IF NOT EXISTS ${database}.events_raw_local ON CLUSTER surge (
    event_id         String,
    type             String,
    region_id        String,
    event_time       DateTime('UTC'),
    received_at      DateTime('UTC'),
    user_hash        String,
    product_type     String,
    price            Nullable(Float64),
    available_supply Nullable(Float64),
    signal           String,
    value            Nullable(Float64),
    quote_id         String,
    experiment_id    String,
    variant          String,
    backfill         UInt8,
    kafka_topic      String,
    kafka_partition  UInt32,
    kafka_offset     UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.events_raw_local', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (region_id, event_time);

CREATE TABLE IF NOT EXISTS ${database}.events_raw ON CLUSTER surge AS ${database}.events_raw_local
ENGINE = Distributed(surge, ${database}, events_raw_local, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.events_raw_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.events_raw_local
GROUP BY kafka_topic, kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.demand_minute_mv ON CLUSTER surge
TO ${database}.demand_minute_local AS
SELECT
    region_id,
    toStartOfMinute(event_time) AS minute,
    countIf(type = 'search') AS searches,
    countIf(type = 'booking') AS bookings,
    countIf(type = 'cancel') AS cancels,
    sumIf(ifNull(available_supply, 0), type = 'supply_update' AND isNotNull(available_supply)) AS supply_sum,
    countIf(type = 'supply_update' AND isNotNull(available_supply)) AS supply_samples,
    sumIf(ifNull(value, 0), type = 'external_signal' AND signal = 'weather' AND isNotNull(value)) AS weather_sum,
    countIf(type = 'external_signal' AND signal = 'weather' AND isNotNull(value)) AS weather_samples,
    sumIf(ifNull(value, 0), type = 'external_signal' AND signal = 'traffic' AND isNotNull(value)) AS traffic_sum,
    countIf(type = 'external_signal' AND signal = 'traffic' AND isNotNull(value)) AS traffic_samples,
    sumIf(ifNull(value, 0), type = 'external_signal' AND signal = 'event' AND isNotNull(value)) AS event_sum,
    countIf(type = 'external_signal' AND signal = 'event' AND isNotNull(value)) AS event_samples
FROM ${database}.events_raw_local
GROUP BY region_id, minute;
