CREATE TABLE IF NOT EXISTS ${database}.models_local ON CLUSTER surge (
    name               String,
    version            String,
    version_num        UInt32,
    horizon_minutes    UInt32,
    schema_hash        String,
    artifact_uri       String,
    sha256             String,
    metrics            String,
    params             String,
    feature_importance String,
    train_from         DateTime('UTC'),
    train_to           DateTime('UTC'),
    status             Enum8('candidate' = 1, 'active' = 2, 'retired' = 3, 'rejected' = 4),
    created_at         DateTime('UTC')
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.models_local', '{replica}')
ORDER BY (name, version_num);

CREATE TABLE IF NOT EXISTS ${database}.models ON CLUSTER surge AS ${database}.models_local
ENGINE = Distributed(surge, ${database}, models_local, rand());

CREATE TABLE IF NOT EXISTS ${database}.model_status_local ON CLUSTER surge (
    name        String,
    version_num UInt32,
    status      Enum8('candidate' = 1, 'active' = 2, 'retired' = 3, 'rejected' = 4),
    changed_at  DateTime('UTC'),
    seq         UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.model_status_local', '{replica}')
ORDER BY (name, version_num, seq);

CREATE TABLE IF NOT EXISTS ${database}.model_status ON CLUSTER surge AS ${database}.model_status_local
ENGINE = Distributed(surge, ${database}, model_status_local, rand());
