-- Search over thread turns. Every stored message waits in `embed_queue`
-- until a qlaud process (any of them) embeds it into `turn_vectors`; the
-- queue is in the store so a restart loses nothing and a backlog drains.
CREATE TABLE embed_queue (
    message_id TEXT PRIMARY KEY REFERENCES thread_messages (id) ON DELETE CASCADE,
    enqueued_ms BIGINT NOT NULL,
    -- The process (ledger instance) embedding it now. Its claim lasts as
    -- long as that process's heartbeat in `instances` stays fresh.
    claimed_by TEXT,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX embed_queue_order ON embed_queue (enqueued_ms, message_id);

-- One vector per message (the primary key makes a second one impossible),
-- with the ids every search filters on, so the filter is part of the index
-- query itself. Deleting a message (or its thread) deletes its vector.
CREATE TABLE turn_vectors (
    message_id TEXT PRIMARY KEY REFERENCES thread_messages (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    role TEXT NOT NULL,
    -- What was embedded: the message's text blocks.
    text TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    -- SQLite: the unit vector as little-endian f32s, scanned with
    -- sqlite-vec. PostgreSQL keeps it in a pgvector column instead (added
    -- at start when the extension exists) and leaves this NULL.
    embedding BYTEA
);
CREATE INDEX turn_vectors_owner ON turn_vectors (tenant_id, key_id, created_ms);
CREATE INDEX turn_vectors_thread ON turn_vectors (thread_id);

-- Backfill: every turn stored before search existed, queued once (a
-- migration runs exactly once per store).
INSERT INTO embed_queue (message_id, enqueued_ms)
SELECT id, created_ms FROM thread_messages;
