-- Console sign-ins: one row per browser session of an admin key. Only a
-- hash of the cookie's token is kept, so a copy of the database opens no
-- session. Sign-out sets revoked_ms; the key's own state (revoked,
-- disabled) is checked on every request as well.
CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX dashboard_sessions_key ON dashboard_sessions (key_id);

-- The last Stripe push run per tenant, for the billing page.
CREATE TABLE stripe_push_runs (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    ran_ms BIGINT NOT NULL,
    period TEXT NOT NULL,
    sent BIGINT NOT NULL,
    already_sent BIGINT NOT NULL,
    still_open BIGINT NOT NULL,
    failed BIGINT NOT NULL
);
