CREATE TABLE IF NOT EXISTS ${database}.api_keys_local ON CLUSTER surge (
    id            String,
    version       UInt64,
    client        String,
    name          String,
    roles         Array(String),
    secret_sha256 String,
    created_at    DateTime('UTC'),
    created_by    String,
    revoked_at    DateTime('UTC')
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.api_keys_local', '{replica}')
ORDER BY (id, version);

CREATE TABLE IF NOT EXISTS ${database}.api_keys ON CLUSTER surge AS ${database}.api_keys_local
ENGINE = Distributed(surge, ${database}, api_keys_local, rand());
