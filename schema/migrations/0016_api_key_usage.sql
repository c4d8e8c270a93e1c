-- When each API key was last used, for its owner's key list. Written by
-- authentication at most once a minute per key (when the value it read is
-- older than that), so a busy key costs no write per request; the column
-- is therefore precise to about a minute. revoked_at (0002) is now set by
-- the key endpoints and `afterok keys revoke`, in the same transaction as
-- the account's APIKeyRevoked event.
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
