-- API keys: only a SHA-256 of the key is stored. Keys are 256-bit random
-- secrets, so a fast hash is enough (no password-style stretching needed)
-- and lets the lookup be an index probe.
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    account_id  text        NOT NULL,
    key_hash    bytea       NOT NULL UNIQUE,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);
