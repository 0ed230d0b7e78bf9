-- Pricing experiments (package experiments).
--
-- experiments: every version of every experiment definition, append-only
-- (the latest version per id is the current one; the older ones are the
-- history of who started, stopped and rolled out what). definition is the
-- JSON of experiments.Experiment.
CREATE TABLE IF NOT EXISTS ${database}.experiments (
    id         String,
    version    UInt32,
    status     String,
    definition String,
    updated_at DateTime('UTC'),
    updated_by String
) ENGINE = MergeTree
ORDER BY (id, version);

-- experiment_exposures: one row per record of the experiments topic (a user
-- was priced with a variant), at most one per user, experiment and
-- experiment day from each API replica. Written by the sink, exactly once
-- per Kafka offset (kafka_* as in events_raw).
CREATE TABLE IF NOT EXISTS ${database}.experiment_exposures (
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
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (experiment_id, variant, user_hash);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_exposures_offsets_mv
TO ${database}.sink_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM ${database}.experiment_exposures
GROUP BY kafka_topic, kafka_partition;

-- Conversions are attributed by user, as experimentation platforms do: a
-- user's bookings and cancellations (user_activity_minute, from events_raw,
-- in or out of any experiment) count for every experiment the user is
-- exposed to, from the experiment's start; the same table before the start
-- gives the pre-period covariate of CUPED. Overlapping experiments in
-- separate layers therefore each see every conversion of their users.
--
-- Users are keyed by user_key = sipHash64(user_hash): grouping and joining
-- a million users on a UInt64 is several times cheaper than on a string.
--
-- experiment_users: the exposed users of each experiment and variant (the
-- randomisation unit). SummingMergeTree: read with GROUP BY.
CREATE TABLE IF NOT EXISTS ${database}.experiment_users (
    experiment_id String,
    variant       String,
    user_key      UInt64,
    exposures     UInt64
) ENGINE = SummingMergeTree
ORDER BY (experiment_id, variant, user_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_users_mv
TO ${database}.experiment_users AS
SELECT experiment_id, variant, sipHash64(user_hash) AS user_key, count() AS exposures
FROM ${database}.experiment_exposures
WHERE user_hash != ''
GROUP BY experiment_id, variant, user_key;

-- experiment_minute: exposures per experiment, variant and minute, for the
-- daily series (experiment days count from the start in the experiment's
-- own day length, so days are cut at query time).
CREATE TABLE IF NOT EXISTS ${database}.experiment_minute (
    experiment_id String,
    variant       String,
    minute        DateTime('UTC'),
    exposures     UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (experiment_id, variant, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_minute_mv
TO ${database}.experiment_minute AS
SELECT experiment_id, variant, toStartOfMinute(at) AS minute, count() AS exposures
FROM ${database}.experiment_exposures
GROUP BY experiment_id, variant, minute;

-- user_activity_minute: every identified user's bookings, booking revenue
-- and cancellations per minute. Every row has bookings or cancels > 0.
CREATE TABLE IF NOT EXISTS ${database}.user_activity_minute (
    user_key  UInt64,
    minute    DateTime('UTC'),
    bookings  UInt64,
    revenue   Float64,
    cancels   UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (user_key, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.user_activity_minute_mv
TO ${database}.user_activity_minute AS
SELECT sipHash64(user_hash) AS user_key, toStartOfMinute(event_time) AS minute,
       countIf(type = 'booking') AS bookings,
       sumIf(ifNull(price, 0), type = 'booking') AS revenue,
       countIf(type = 'cancel') AS cancels
FROM ${database}.events_raw
WHERE type IN ('booking', 'cancel') AND user_hash != ''
GROUP BY user_key, minute;

-- experiment_results: snapshots of the per-variant sums that the results
-- are computed from (package experiments refreshes them in the background
-- and on request: per-user aggregation over millions of exposures takes
-- seconds, reading a snapshot milliseconds). One snapshot is the rows of
-- one (experiment_id, computed_at); the statistics are a pure function of
-- them. window_to is the end of the activity counted.
CREATE TABLE IF NOT EXISTS ${database}.experiment_results (
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
) ENGINE = MergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY (experiment_id, computed_at, variant);
