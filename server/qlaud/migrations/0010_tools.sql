-- Tools: webhooks a tenant registers once and thread turns name. A tool's
-- name is what the model calls it by, so it is unique within the tenant;
-- the unique index, not a check before the insert, is what keeps two
-- concurrent registrations of one name from both succeeding.
CREATE TABLE tools (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON text, so the same SQL runs on SQLite and PostgreSQL.
    input_schema TEXT NOT NULL,
    webhook_url TEXT NOT NULL,
    timeout_secs BIGINT NOT NULL DEFAULT 30 CHECK (timeout_secs BETWEEN 1 AND 300),
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX tools_tenant_name ON tools (tenant_id, name);
CREATE INDEX tools_tenant_order ON tools (tenant_id, created_ms, id);
