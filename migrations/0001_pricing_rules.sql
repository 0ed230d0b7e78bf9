-- Versioned pricing rules, one row per (region, product, version). Rows are
-- never updated: a change is a new version, effective from effective_from.
-- Times are seconds (DateTime) in UTC.
CREATE TABLE IF NOT EXISTS ${database}.pricing_rules (
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
) ENGINE = MergeTree
ORDER BY (region_id, product_type, version);
