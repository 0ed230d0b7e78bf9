-- Model registry. models holds one immutable row per registered version;
-- status there is the status at registration. Status changes are appended to
-- model_status (never updated, so the history stays); the current status of
-- a version is its model_status row with the highest seq, falling back to
-- models.status. metrics, params and feature_importance are JSON objects.
CREATE TABLE IF NOT EXISTS ${database}.models (
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
) ENGINE = MergeTree
ORDER BY (name, version_num);

-- seq is the Unix time of the change in nanoseconds: it orders changes made
-- within the same second.
CREATE TABLE IF NOT EXISTS ${database}.model_status (
    name        String,
    version_num UInt32,
    status      Enum8('candidate' = 1, 'active' = 2, 'retired' = 3, 'rejected' = 4),
    changed_at  DateTime('UTC'),
    seq         UInt64
) ENGINE = MergeTree
ORDER BY (name, version_num, seq);
