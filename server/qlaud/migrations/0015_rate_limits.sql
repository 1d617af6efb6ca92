-- Per-key rate limits. The limits live on the key beside its cap (NULL: the
-- tenant's default from qlaud.toml, or none). The counters of the current
-- one-minute window live on the key's spend row, so the admission upsert
-- that already decides the cap counts and checks them in the same statement.
ALTER TABLE api_keys ADD COLUMN max_requests_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN max_tokens_per_minute BIGINT;
ALTER TABLE key_spend ADD COLUMN rate_window_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_spend ADD COLUMN rate_requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_spend ADD COLUMN rate_tokens BIGINT NOT NULL DEFAULT 0;
