-- One row per model request qlaud sent upstream (or answered itself), with
-- the usage the provider reported and what it cost the key.
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    streamed BIGINT NOT NULL,
    status BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX requests_tenant_time ON requests (tenant_id, created_ms);
CREATE INDEX requests_key_time ON requests (key_id, created_ms);
