CREATE TABLE IF NOT EXISTS ${database}.experiment_metrics_daily_local ON CLUSTER surge (
    experiment_id String,
    variant       String,
    day           Date,
    exposures     UInt64,
    conversions   UInt64,
    revenue       Float64,
    revenue_sq    Float64
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/${database}.experiment_metrics_daily_local', '{replica}')
PARTITION BY toYYYYMM(day)
ORDER BY (experiment_id, variant, day);

CREATE TABLE IF NOT EXISTS ${database}.experiment_metrics_daily ON CLUSTER surge AS ${database}.experiment_metrics_daily_local
ENGINE = Distributed(surge, ${database}, experiment_metrics_daily_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_metrics_daily_mv ON CLUSTER surge
TO ${database}.experiment_metrics_daily_local AS
SELECT
    experiment_id,
    variant,
    toDate(event_time) AS day,
    countIf(type = 'search') AS exposures,
    countIf(type = 'booking') AS conversions,
    sumIf(ifNull(price, 0), type = 'booking') AS revenue,
    sumIf(ifNull(price, 0) * ifNull(price, 0), type = 'booking') AS revenue_sq
FROM ${database}.events_raw_local
WHERE experiment_id != '' AND type IN ('search', 'booking')
GROUP BY experiment_id, variant, day;
