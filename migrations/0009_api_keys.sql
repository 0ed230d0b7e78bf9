-- API keys (package auth): every version of every key, append-only; the
-- latest version per id is the key's state (revoked once revoked_at is set).
-- Only the SHA-256 of the key is stored: the key is shown once, when
-- `surge keys create` makes it. client is the owner: its rate-limit bucket
-- and the namespace of its event ids.
CREATE TABLE IF NOT EXISTS ${database}.api_keys (
    id            String,
    version       UInt64,
    client        String,
    name          String,
    roles         Array(String),
    secret_sha256 String,
    created_at    DateTime('UTC'),
    created_by    String,
    revoked_at    DateTime('UTC')
) ENGINE = MergeTree
ORDER BY (id, version);
