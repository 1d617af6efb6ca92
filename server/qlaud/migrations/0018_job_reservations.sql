-- A job holds its worst case from submission: `reservation_id` names its
-- row in `reservations`, kept under the instance 'job' (which no process
-- heartbeats, so crash recovery leaves it alone) until the job is
-- dispatched, when it moves to the running process and follows the crash
-- rule like any call in flight. NULL once settled or released.
ALTER TABLE jobs ADD COLUMN reservation_id TEXT;
-- Whether that hold was clamped (the budget paid for less output than the
-- body asks): the run then keeps to what it pays for, as a synchronous call
-- clamped at admission would.
ALTER TABLE jobs ADD COLUMN reservation_clamped BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_reservation ON jobs (reservation_id);
-- The per-tenant concurrency limit counts a tenant's jobs in progress.
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status);
-- A job retried after its provider's 429 or 5xx waits until then.
ALTER TABLE jobs ADD COLUMN run_after_ms BIGINT NOT NULL DEFAULT 0;
