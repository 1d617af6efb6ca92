-- Turns of the search queue whose owner key cannot pay for their embedding
-- now (spend cap reached, key suspended or disabled, rate limit): they stay
-- queued and are not claimed again before `not_before_ms`. A table of its
-- own (not a column of `embed_queue`) so it exists whatever order the
-- migrations of a store ran in; a turn's row goes with its message.
CREATE TABLE embed_deferrals (
    message_id TEXT PRIMARY KEY REFERENCES thread_messages (id) ON DELETE CASCADE,
    not_before_ms BIGINT NOT NULL,
    -- Why, for operators reading the table.
    reason TEXT NOT NULL
);
