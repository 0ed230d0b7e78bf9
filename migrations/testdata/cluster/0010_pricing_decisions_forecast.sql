ALTER TABLE ${database}.pricing_decisions_local ON CLUSTER surge
    ADD COLUMN horizon_minutes UInt32 DEFAULT visitParamExtractUInt(record, 'horizonMinutes') AFTER degraded,
    ADD COLUMN forecast_demand Float64 DEFAULT visitParamExtractFloat(record, 'demand') AFTER horizon_minutes,
    ADD COLUMN forecast_at DateTime('UTC') DEFAULT parseDateTimeBestEffortOrZero(visitParamExtractString(record, 'generatedAt')) AFTER forecast_demand;

DROP TABLE IF EXISTS ${database}.pricing_decisions ON CLUSTER surge;

CREATE TABLE IF NOT EXISTS ${database}.pricing_decisions ON CLUSTER surge AS ${database}.pricing_decisions_local
ENGINE = Distributed(surge, ${database}, pricing_decisions_local, kafka_partition);
