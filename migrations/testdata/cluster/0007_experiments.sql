CREATE TABLE IF NOT EXISTS ${database}.experiments_local ON CLUSTER surge (
    id         String,
    version    UInt32,
    status     String,
    definition String,
    updated_at DateTime('UTC'),
    updated_by String
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.experiments_local', '{replica}')
ORDER BY (id, version);

CREATE TABLE IF NOT EXISTS ${database}.experiments ON CLUSTER surge AS ${database}.experiments_local
ENGINE = Distributed(surge, ${database}, experiments_local, rand());

CREATE TABLE IF NOT EXISTS ${database}.experiment_exposures_local ON CLUSTER surge (
    experiment_id   String,
    variant         String,
    user_hash       String,
    region_id       String,
    product_type    String,
    quote_id        String,
    at              DateTime('UTC'),
    kafka_topic     String,
    kafka_partition UInt32,
    kafka_offset    UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.experiment_exposures_local', '{replica}')
PARTITION BY toYYYYMM(at)
ORDER BY (experiment_id, variant, user_hash);

CREATE TABLE IF NOT EXISTS ${database}.experiment_exposures ON CLUSTER surge AS ${database}.experiment_exposures_local
ENGINE = Distributed(surge, ${database}, experiment_exposures_local, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_exposures_offsets_mv ON CLUSTER surge
TO ${database}.sink_offsets_local AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.experiment_exposures_local
GROUP BY kafka_topic, kafka_partition;

CREATE TABLE IF NOT EXISTS ${database}.experiment_users_local ON CLUSTER surge (
    experiment_id String,
    variant       String,
    user_key      UInt64,
    exposures     UInt64
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/${database}.experiment_users_local', '{replica}')
ORDER BY (experiment_id, variant, user_key);

CREATE TABLE IF NOT EXISTS ${database}.experiment_users ON CLUSTER surge AS ${database}.experiment_users_local
ENGINE = Distributed(surge, ${database}, experiment_users_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_users_mv ON CLUSTER surge
TO ${database}.experiment_users_local AS
SELECT experiment_id, variant, sipHash64(user_hash) AS user_key, count() AS exposures
FROM ${database}.experiment_exposures_local
WHERE user_hash != ''
GROUP BY experiment_id, variant, user_key;

CREATE TABLE IF NOT EXISTS ${database}.experiment_minute_local ON CLUSTER surge (
    experiment_id String,
    variant       String,
    minute        DateTime('UTC'),
    exposures     UInt64
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/${database}.experiment_minute_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (experiment_id, variant, minute);

CREATE TABLE IF NOT EXISTS ${database}.experiment_minute ON CLUSTER surge AS ${database}.experiment_minute_local
ENGINE = Distributed(surge, ${database}, experiment_minute_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_minute_mv ON CLUSTER surge
TO ${database}.experiment_minute_local AS
SELECT experiment_id, variant, toStartOfMinute(at) AS minute, count() AS exposures
FROM ${database}.experiment_exposures_local
GROUP BY experiment_id, variant, minute;

CREATE TABLE IF NOT EXISTS ${database}.user_activity_minute_local ON CLUSTER surge (
    user_key  UInt64,
    minute    DateTime('UTC'),
    bookings  UInt64,
    revenue   Float64,
    cancels   UInt64
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/${database}.user_activity_minute_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (user_key, minute);

CREATE TABLE IF NOT EXISTS ${database}.user_activity_minute ON CLUSTER surge AS ${database}.user_activity_minute_local
ENGINE = Distributed(surge, ${database}, user_activity_minute_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.user_activity_minute_mv ON CLUSTER surge
TO ${database}.user_activity_minute_local AS
SELECT sipHash64(user_hash) AS user_key, toStartOfMinute(event_time) AS minute,
       countIf(type = 'booking') AS bookings,
       sumIf(ifNull(price, 0), type = 'booking') AS revenue,
       countIf(type = 'cancel') AS cancels
FROM ${database}.events_raw_local
WHERE type IN ('booking', 'cancel') AND user_hash != ''
GROUP BY user_key, minute;

CREATE TABLE IF NOT EXISTS ${database}.experiment_results_local ON CLUSTER surge (
    experiment_id        String,
    computed_at          DateTime('UTC'),
    window_to            DateTime('UTC'),
    variant              String,
    users                UInt64,
    converted            UInt64,
    conversions          UInt64,
    cancelled            UInt64,
    cancels              UInt64,
    bookings_sq          UInt64,
    cancels_sq           UInt64,
    bookings_cancels     UInt64,
    revenue_raw          Float64,
    revenue              Float64,
    revenue_sq           Float64,
    pre_booked           UInt64,
    pre_booked_converted UInt64,
    pre_revenue          Float64,
    pre_revenue_sq       Float64,
    pre_cross            Float64,
    revenue_cap          Float64,
    days                 Array(Int64),
    day_exposures        Array(UInt64),
    day_conversions      Array(UInt64),
    day_cancels          Array(UInt64),
    day_revenue          Array(Float64)
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.experiment_results_local', '{replica}')
PARTITION BY toYYYYMM(computed_at)
ORDER BY (experiment_id, computed_at, variant);

CREATE TABLE IF NOT EXISTS ${database}.experiment_results ON CLUSTER surge AS ${database}.experiment_results_local
ENGINE = Distributed(surge, ${database}, experiment_results_local, rand());
