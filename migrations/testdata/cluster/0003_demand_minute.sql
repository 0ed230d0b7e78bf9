CREATE TABLE IF NOT EXISTS ${database}.demand_minute_local ON CLUSTER surge (
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
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/${database}.demand_minute_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (region_id, minute);

CREATE TABLE IF NOT EXISTS ${database}.demand_minute ON CLUSTER surge AS ${database}.demand_minute_local
ENGINE = Distributed(surge, ${database}, demand_minute_local, rand());
