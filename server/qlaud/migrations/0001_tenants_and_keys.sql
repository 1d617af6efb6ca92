-- Portable SQL: the same file runs on SQLite and PostgreSQL. Money is integer
-- micro-dollars, times are Unix milliseconds, flags are 0/1 integers.

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Every later table (usage ledger, reservations, threads, tools, jobs) hangs
-- off tenant_id and, for per-user data, key_id; a key row is never deleted
-- (revoked_ms marks it) so history always has its key.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    secret_hint TEXT NOT NULL,
    max_spend_micros BIGINT,
    period TEXT NOT NULL,
    metadata TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    rotated_ms BIGINT,
    revoked_ms BIGINT
);

CREATE INDEX api_keys_tenant_order ON api_keys (tenant_id, created_ms, id);
