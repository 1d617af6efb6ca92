-- The secret qlaud signs spend alerts with (HMAC-SHA256, like Stripe's
-- scheme), generated when an alert URL is first set and shown once.
ALTER TABLE billing_settings ADD COLUMN alert_signing_secret TEXT;
