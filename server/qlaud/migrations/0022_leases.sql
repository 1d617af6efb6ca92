-- Budget leases. A lease is a slice of a key's budget that one qlaud
-- process holds in the store and admits that key's requests against in
-- memory, so most requests need no write before their provider call. It is
-- counted in key_spend.leased_micros (beside reserved_micros, which per
-- request reservations hold), and admission checks settled + reserved +
-- leased against the cap. Settling a request admitted under a lease moves
-- its cost from the lease to settled spend; what a lease no longer needs
-- is given back; crash recovery settles the lease of a stopped process at
-- what it still holds.
ALTER TABLE key_spend ADD COLUMN leased_micros BIGINT NOT NULL DEFAULT 0;

CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    -- The call that took the lease: a recovered lease is logged under it.
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    amount_micros BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX leases_instance ON leases (instance_id);
