-- What each request used of units beyond the ones every model call
-- measures (audio_seconds, characters, a fee per search, …): units are
-- data, so a new one needs no new column. Tokens stay in the token columns
-- of `requests` and the request count is its rows, so a chat call writes
-- nothing more here.
CREATE TABLE request_units (
    request_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (request_id, unit)
);
