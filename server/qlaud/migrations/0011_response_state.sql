-- Responses API state, kept by qlaud (the provider is always told
-- `store: false`). A response's input and output items are thread messages
-- tagged with the response's id; the `responses` row says which thread holds
-- its conversation and how far into it the response reaches, so
-- `previous_response_id` loads exactly the history up to it.
ALTER TABLE thread_messages ADD COLUMN response_id TEXT;

CREATE TABLE responses (
    -- The `resp_…` id the client saw.
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    -- The key that created it: a standard key reaches only its own.
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    -- The seq of the thread's last message that belongs to this response's
    -- conversation (its own output).
    last_seq BIGINT NOT NULL,
    -- 1 when made with `conversation`: its items belong to the
    -- conversation and stay when the response is deleted.
    in_conversation BIGINT NOT NULL DEFAULT 0,
    -- The response object as it was returned (JSON).
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX responses_thread ON responses (thread_id);
