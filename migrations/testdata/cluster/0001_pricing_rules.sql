CREATE TABLE IF NOT EXISTS ${database}.pricing_rules_local ON CLUSTER surge (
    region_id           String,
    region_name         String,
    product_type        String,
    currency            String,
    version             UInt32,
    effective_from      DateTime('UTC'),
    base_price          Float64,
    min_multiplier      Float64,
    max_multiplier      Float64,
    max_step_per_minute Float64,
    threshold           Float64,
    sensitivity         Float64,
    multiplier_step     Float64,
    price_step          Float64,
    created_at          DateTime('UTC'),
    created_by          String
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.pricing_rules_local', '{replica}')
ORDER BY (region_id, product_type, version);

CREATE TABLE IF NOT EXISTS ${database}.pricing_rules ON CLUSTER surge AS ${database}.pricing_rules_local
ENGINE = Distributed(surge, ${database}, pricing_rules_local, rand());
