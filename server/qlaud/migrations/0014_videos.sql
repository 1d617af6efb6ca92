-- Videos (OpenAI's Videos API shape). A video renders after its create call
-- returns, so its reservation is held past the request: the row keeps what
-- settling needs, and the first poll that sees the provider's outcome settles
-- it (completed: seconds x the size tier's price; failed: nothing). Its
-- reservation is moved to the instance 'video', which crash recovery skips.
CREATE TABLE videos (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    reserved_micros BIGINT NOT NULL,
    unit TEXT NOT NULL,
    seconds BIGINT NOT NULL,
    status TEXT NOT NULL,
    settled_ms BIGINT,
    created_ms BIGINT NOT NULL
);

CREATE INDEX videos_tenant ON videos (tenant_id, key_id);
