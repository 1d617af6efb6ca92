-- The request log summed per key, model and hour, kept in the transaction
-- that writes the log's rows, so a usage report reads a row per key, model
-- and hour instead of every request of its window.
CREATE TABLE usage_hourly (
    tenant_id TEXT NOT NULL,
    hour_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour_ms, key_id, model)
);
CREATE INDEX usage_hourly_key ON usage_hourly (key_id, hour_ms);

-- Units beyond the tokens and the request count, as `request_units`.
CREATE TABLE usage_hourly_units (
    tenant_id TEXT NOT NULL,
    hour_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    unit TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour_ms, key_id, model, unit)
);

-- The log written before the rollup existed.
INSERT INTO usage_hourly (tenant_id, hour_ms, key_id, model, requests, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, cost_micros)
SELECT tenant_id, (created_ms / 3600000) * 3600000, key_id, model, COUNT(*),
    SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),
    SUM(cost_micros)
FROM requests GROUP BY tenant_id, (created_ms / 3600000) * 3600000, key_id, model;

INSERT INTO usage_hourly_units (tenant_id, hour_ms, key_id, model, unit, quantity)
SELECT r.tenant_id, (r.created_ms / 3600000) * 3600000, r.key_id, r.model, u.unit,
    SUM(u.quantity)
FROM request_units u JOIN requests r ON r.id = u.request_id
GROUP BY r.tenant_id, (r.created_ms / 3600000) * 3600000, r.key_id, r.model, u.unit;
