-- Billing out: each tenant's Stripe settings, Stripe webhook events seen,
-- suspensions of keys whose customer stopped paying, meter events pushed.

CREATE TABLE billing_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    -- Write-only secrets: never returned by the API, never logged.
    stripe_secret_key TEXT,
    webhook_secret TEXT,
    meter_event_name TEXT NOT NULL,
    alert_webhook_url TEXT,
    updated_ms BIGINT NOT NULL
);

-- Stripe delivers at least once: an event id is acted on once per tenant.
CREATE TABLE stripe_events (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

-- The Stripe customer of a key (from metadata.stripe_customer_id), kept in
-- a column so webhooks find a customer's keys by index.
ALTER TABLE api_keys ADD COLUMN stripe_customer_id TEXT;
-- Set while the customer's payments fail: the key gets 402.
ALTER TABLE api_keys ADD COLUMN suspended_ms BIGINT;
-- `created` of the newest Stripe event applied to the key: deliveries come
-- out of order, and an older event never undoes a newer one.
ALTER TABLE api_keys ADD COLUMN billing_event_ms BIGINT;
CREATE INDEX api_keys_customer ON api_keys (tenant_id, stripe_customer_id);

-- Every suspension and reinstatement, for the key's history.
CREATE TABLE key_billing_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    stripe_event_id TEXT NOT NULL,
    stripe_event_type TEXT NOT NULL,
    old_status TEXT NOT NULL,
    new_status TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX key_billing_events_key ON key_billing_events (key_id, created_ms);

-- Meter events Stripe accepted, by their idempotency identifier, so a push
-- never sends one twice.
CREATE TABLE meter_pushes (
    tenant_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    key_id TEXT NOT NULL,
    value BIGINT NOT NULL,
    pushed_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, identifier)
);

-- Spend alerts sent, once per key, window and threshold.
CREATE TABLE spend_alerts (
    key_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    threshold BIGINT NOT NULL,
    sent_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, period_start_ms, threshold)
);
