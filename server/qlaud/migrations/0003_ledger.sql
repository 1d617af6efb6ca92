-- The ledger behind the hard cap.
--
-- key_spend: per key and calendar window, what is settled and what is held
-- by requests in flight. Admission is one conditional upsert on this row.
CREATE TABLE key_spend (
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    period_start_ms BIGINT NOT NULL,
    settled_micros BIGINT NOT NULL,
    reserved_micros BIGINT NOT NULL,
    PRIMARY KEY (key_id, period_start_ms)
);

-- One row per admitted request until it is settled. Settling deletes it, so
-- whoever deletes it (the request, or crash recovery) settles it, once.
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    reserved_micros BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX reservations_instance ON reservations (instance_id);

-- Running qlaud processes and when each last said it was alive.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    heartbeat_ms BIGINT NOT NULL
);

-- Requests carry the window they were billed to, and whether crash
-- recovery settled them (at the reserved amount) rather than the request.
ALTER TABLE requests ADD COLUMN period_start_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN recovered BIGINT NOT NULL DEFAULT 0;
