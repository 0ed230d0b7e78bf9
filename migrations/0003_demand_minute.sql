-- Per-minute demand of each region. Every non-key column is summed when
-- parts merge (SummingMergeTree), so a materialized view from events_raw can
-- insert partial rows TO this table. Gauge-like signals (supply, weather,
-- traffic, local event) are kept as sum + number of samples; the reader
-- divides. Maxima or "latest" values would not survive the summing and are
-- deliberately absent. Readers must aggregate with sum() ... GROUP BY, since
-- parts may not be merged yet. A row whose sums are all zero disappears at
-- merge time: a missing minute means no activity.
CREATE TABLE IF NOT EXISTS ${database}.demand_minute (
    region_id       String,
    minute          DateTime('UTC'),
    searches        UInt64,
    bookings        UInt64,
    cancels         UInt64,
    supply_sum      Float64,
    supply_samples  UInt64,
    weather_sum     Float64,
    weather_samples UInt64,
    traffic_sum     Float64,
    traffic_samples UInt64,
    event_sum       Float64,
    event_samples   UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (region_id, minute);
