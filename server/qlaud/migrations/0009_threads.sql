-- Threads: server-side conversation memory. A thread belongs to one key of
-- its tenant (the owner, who pays for its turns); JSON columns are TEXT so
-- the same SQL runs on SQLite and PostgreSQL.
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    metadata TEXT NOT NULL,
    system_prompt TEXT,
    model TEXT,
    truncation TEXT NOT NULL DEFAULT 'disabled',
    -- The seq of the thread's newest message (0 before the first): appends
    -- bump it in the same statement that locks the row, so concurrent
    -- appends never share a seq.
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX threads_tenant_order ON threads (tenant_id, created_ms, id);
CREATE INDEX threads_owner_order ON threads (tenant_id, key_id, created_ms, id);

-- Messages in a provider-neutral form: content is an array of Anthropic
-- content blocks, whatever model wrote or read them.
CREATE TABLE thread_messages (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    seq BIGINT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    model TEXT,
    stop_reason TEXT,
    usage TEXT,
    request_id TEXT,
    metadata TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (thread_id, seq)
);

-- Idempotency of turns: one row per (thread, Idempotency-Key). A row
-- without message_id is a turn in progress; with one, the answer to replay.
CREATE TABLE thread_turns (
    thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    -- What the first request sent (a hash), so reusing a key for a
    -- different request is refused instead of replaying the wrong answer.
    fingerprint TEXT NOT NULL,
    message_id TEXT,
    claimed_ms BIGINT NOT NULL,
    completed_ms BIGINT,
    PRIMARY KEY (thread_id, idempotency_key)
);
