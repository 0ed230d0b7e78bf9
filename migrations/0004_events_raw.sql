-- Raw events as the ClickHouse sink (package sink) writes them from Kafka,
-- one row per Kafka record of the event topics, with the record's topic,
-- partition and offset. The sink inserts each batch as one block and
-- resumes after the highest offset ClickHouse holds per partition: that is
-- its exactly-once guarantee (ClickHouse 18.16 has no insert deduplication
-- for these tables). Optional numbers are Nullable: "no price" is not 0.
--
-- sink_offsets is that highest offset, kept small: a materialized view adds
-- one row per (topic, partition) of every inserted block, in the same INSERT
-- as the block itself, so the sink can find where to resume without scanning
-- events_raw. ReplacingMergeTree(max_offset) keeps the highest row when parts
-- merge; readers still take max(). Never truncate it without events_raw.
CREATE TABLE IF NOT EXISTS ${database}.sink_offsets (
    kafka_topic     String,
    kafka_partition UInt32,
    max_offset      UInt64
) ENGINE = ReplacingMergeTree(max_offset)
ORDER BY (kafka_topic, kafka_partition);

CREATE TABLE IF NOT EXISTS ${database}.events_raw (
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
) ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (region_id, event_time);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.events_raw_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.events_raw
GROUP BY kafka_topic, kafka_partition;

-- Per-minute demand (0003) from the raw events: counts of searches, bookings
-- and cancels; supply updates and external signals (weather, traffic, local
-- event) as sum + number of samples, so that partial rows add up in the
-- SummingMergeTree. Events of other types or signals add nothing.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.demand_minute_mv
TO ${database}.demand_minute AS
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
FROM ${database}.events_raw
GROUP BY region_id, minute;
