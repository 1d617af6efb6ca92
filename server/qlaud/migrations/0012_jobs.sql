-- Jobs: one call of a synchronous endpoint, submitted now and run in the
-- background by any qlaud process on the store. JSON columns are TEXT so
-- the same SQL runs on SQLite and PostgreSQL.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    -- The key that submitted the job: it owns it and pays for its call.
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    webhook_url TEXT,
    metadata TEXT NOT NULL,
    -- The submission's Idempotency-Key and a hash of what it sent, so a
    -- retry answers with this job and a different request is refused.
    idempotency_key TEXT,
    fingerprint TEXT NOT NULL,
    -- queued, in_progress, completed, failed, cancelled.
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- The process (ledger instance) running it. Its lease lasts as long as
    -- that process's heartbeat in `instances` stays fresh.
    lease_owner TEXT,
    -- Set just before the endpoint is called: from then on the call may
    -- be billed, so a job whose process dies is never run again.
    dispatched_ms BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    result_status BIGINT,
    result_body TEXT,
    cost_micros BIGINT,
    error_code TEXT,
    error_message TEXT,
    -- The completion webhook's message id (the same on every attempt) and
    -- whether it still has to be delivered.
    webhook_id TEXT,
    webhook_pending BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    completed_ms BIGINT,
    updated_ms BIGINT NOT NULL
);
-- NULL keys never collide, so only submissions that sent one are unique.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (key_id, idempotency_key);
CREATE INDEX jobs_queue ON jobs (status, created_ms, id);
CREATE INDEX jobs_tenant_order ON jobs (tenant_id, created_ms, id);
CREATE INDEX jobs_owner_order ON jobs (tenant_id, key_id, created_ms, id);
