-- Per-experiment, per-variant, per-day (UTC, of the event time) metrics,
-- from the raw events that carry experiment information:
--   exposures   = searches (a price was shown to the user in that variant),
--   conversions = bookings,
--   revenue     = sum of the bookings' prices (a booking without a price adds 0),
--   revenue_sq  = sum of the squared booking prices.
-- Each exposure is one unit with revenue 0 or the price of its booking, so
-- revenue / exposures is the mean revenue per exposure and
-- revenue_sq / exposures - (revenue / exposures)^2 its variance (events are
-- the units; there is no per-user aggregation). Cancels are not subtracted.
-- SummingMergeTree: read with sum() ... GROUP BY (parts may be unmerged).
-- Every row has exposures or conversions > 0, so merges never drop one.
CREATE TABLE IF NOT EXISTS ${database}.experiment_metrics_daily (
    experiment_id String,
    variant       String,
    day           Date,
    exposures     UInt64,
    conversions   UInt64,
    revenue       Float64,
    revenue_sq    Float64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (experiment_id, variant, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.experiment_metrics_daily_mv
TO ${database}.experiment_metrics_daily AS
SELECT
    experiment_id,
    variant,
    toDate(event_time) AS day,
    countIf(type = 'search') AS exposures,
    countIf(type = 'booking') AS conversions,
    sumIf(ifNull(price, 0), type = 'booking') AS revenue,
    sumIf(ifNull(price, 0) * ifNull(price, 0), type = 'booking') AS revenue_sq
FROM ${database}.events_raw
WHERE experiment_id != '' AND type IN ('search', 'booking')
GROUP BY experiment_id, variant, day;
