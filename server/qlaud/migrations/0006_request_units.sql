-- What each request used, per priced unit (input_tokens, requests,
-- audio_seconds, …): units are data, so a new one needs no new column.
-- The token columns of `requests` stay, for the flat fields reports keep.
CREATE TABLE request_units (
    request_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (request_id, unit)
);

-- Requests settled before units existed: their tokens, and the request.
INSERT INTO request_units (request_id, unit, quantity)
    SELECT id, 'input_tokens', input_tokens FROM requests WHERE input_tokens > 0;
INSERT INTO request_units (request_id, unit, quantity)
    SELECT id, 'output_tokens', output_tokens FROM requests WHERE output_tokens > 0;
INSERT INTO request_units (request_id, unit, quantity)
    SELECT id, 'cache_read_tokens', cache_read_tokens FROM requests WHERE cache_read_tokens > 0;
INSERT INTO request_units (request_id, unit, quantity)
    SELECT id, 'cache_write_tokens', cache_write_tokens FROM requests WHERE cache_write_tokens > 0;
INSERT INTO request_units (request_id, unit, quantity)
    SELECT id, 'requests', 1 FROM requests;
