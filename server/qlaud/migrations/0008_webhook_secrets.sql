-- Each tenant's outgoing signing secret (Standard Webhooks, `whsec_` and
-- the base64 of 32 random bytes): every call qlaud makes to a URL the
-- tenant gave it (spend alerts, tools, job webhooks) is signed with it.
--
-- Tenants made from now on get one with the tenant. Existing tenants get
-- theirs on first use: portable SQL has no CSPRNG with base64 on both
-- SQLite and PostgreSQL, so qlaud makes it and inserts it with
-- ON CONFLICT DO NOTHING, then reads back whichever insert won, so several
-- processes agree on one. Nobody has seen a secret made that way: the
-- tenant learns its secret from rotate_webhook_secret.
--
-- The alert signing secret of 0005 (`qlaud-signature`) is not carried over:
-- it is not of this form. It keeps signing that header during its
-- deprecation window.
CREATE TABLE webhook_secrets (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
