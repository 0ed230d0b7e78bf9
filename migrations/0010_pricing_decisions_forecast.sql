-- The forecast a quote was priced with, as columns, for the forecast
-- accuracy monitor (which read it from the JSON record before records were
-- written in CBOR). The sink writes them for every new record; for rows
-- written before this migration, the defaults read them from the JSON
-- record, so older rows answer the same queries without being rewritten.
-- One statement (ADD COLUMN cannot be made idempotent on 18.16).
ALTER TABLE ${database}.pricing_decisions
    ADD COLUMN horizon_minutes UInt32 DEFAULT visitParamExtractUInt(record, 'horizonMinutes') AFTER degraded,
    ADD COLUMN forecast_demand Float64 DEFAULT visitParamExtractFloat(record, 'demand') AFTER horizon_minutes,
    ADD COLUMN forecast_at DateTime('UTC') DEFAULT parseDateTimeBestEffortOrZero(visitParamExtractString(record, 'generatedAt')) AFTER forecast_demand;
