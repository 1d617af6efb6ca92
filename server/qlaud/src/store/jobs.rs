//! Jobs, as stored: the durable queue every qlaud process works. Reads that
//! serve a caller name the tenant and, for a standard key, the owner key, so
//! a job outside the caller's reach reads as missing.
//!
//! A job is claimed by one process at a time: on PostgreSQL with `FOR
//! UPDATE SKIP LOCKED` (and a status re-check, so two claims never both
//! win), on SQLite by the single writer connection. The claim is held as
//! long as the claiming process's ledger heartbeat stays fresh; when it
//! goes silent the job is recovered by the crash rule (see
//! [`Store::recover_jobs`]).

use std::collections::BTreeMap;

use qlaud_api::JobStatus;
use sqlx::{FromRow, Row};

use super::{Backend, Store, StoreResult, new_id};
use crate::error::Error;

macro_rules! job_columns {
    () => {
        "id, tenant_id, key_id, endpoint, body, webhook_url, metadata, idempotency_key, \
         fingerprint, status, attempts, lease_owner, dispatched_ms, cancel_requested, \
         result_status, result_body, cost_micros, error_code, error_message, webhook_id, \
         webhook_pending, created_ms, started_ms, completed_ms, updated_ms, reservation_id, \
         reservation_clamped"
    };
}

/// The instance name a queued job's reservation is held under: no process
/// heartbeats it, so crash recovery never settles it; the job's own
/// course (run, cancel, refusal) does.
pub const HELD: &str = "job";

const COMPLETED: &str = "completed";
const FAILED: &str = "failed";
const CANCELLED: &str = "cancelled";

pub fn job_status_str(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "queued",
        JobStatus::InProgress => "in_progress",
        JobStatus::Completed => COMPLETED,
        JobStatus::Failed => FAILED,
        JobStatus::Cancelled => CANCELLED,
    }
}

pub fn parse_job_status(s: &str) -> Option<JobStatus> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Which jobs a caller reaches: a tenant's, and for a standard key only
/// its own.
#[derive(Clone, Copy, Debug)]
pub struct JobAccess<'a> {
    pub tenant_id: &'a str,
    /// `Some(key)` limits to that key's jobs; `None` is the whole tenant.
    pub owner: Option<&'a str>,
}

/// A job to insert, already validated.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub tenant_id: String,
    pub key_id: String,
    pub endpoint: String,
    /// The endpoint's body as compact JSON.
    pub body: String,
    pub webhook_url: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    /// The reservation holding its worst case (under [`HELD`]), and
    /// whether admission clamped its output to fit the budget.
    pub reservation_id: Option<String>,
    pub reservation_clamped: bool,
}

/// A job as stored.
#[derive(Clone, Debug, FromRow)]
pub struct JobRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub endpoint: String,
    pub body: String,
    pub webhook_url: Option<String>,
    pub metadata: String,
    pub idempotency_key: Option<String>,
    pub fingerprint: String,
    pub status: String,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub dispatched_ms: Option<i64>,
    pub cancel_requested: i64,
    pub result_status: Option<i64>,
    pub result_body: Option<String>,
    pub cost_micros: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub webhook_id: Option<String>,
    pub webhook_pending: i64,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    pub updated_ms: i64,
    pub reservation_id: Option<String>,
    pub reservation_clamped: i64,
}

impl JobRow {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), COMPLETED | FAILED | CANCELLED)
    }
}

/// How a submission went: a new job, or the one an earlier submission
/// with the same Idempotency-Key made.
#[derive(Debug)]
pub enum JobInsert {
    Created(JobRow),
    Replayed(JobRow),
    /// The key was used for a different request.
    Mismatch,
}

/// How a job ended.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub result_status: Option<u16>,
    pub result_body: Option<String>,
    pub cost_micros: Option<i64>,
    pub error: Option<(&'static str, String)>,
}

/// Which jobs to list, newest first, before an exclusive bound.
#[derive(Clone, Debug)]
pub struct JobQuery<'a> {
    pub access: JobAccess<'a>,
    pub key_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub before: Option<(i64, &'a str)>,
    pub limit: u32,
}

fn owner(access: JobAccess<'_>) -> &str {
    access.owner.unwrap_or("")
}

impl Store {
    /// Inserts a job, or with an Idempotency-Key already used by the same
    /// key, finds the job it made. The unique index decides between
    /// concurrent submissions of one key.
    pub async fn insert_job(&self, new: &NewJob, now: i64) -> StoreResult<JobInsert> {
        const SQL: &str = concat!(
            "INSERT INTO jobs (id, tenant_id, key_id, endpoint, body, webhook_url, metadata, \
             idempotency_key, fingerprint, status, created_ms, updated_ms, reservation_id, \
             reservation_clamped) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $10, $11, $12) \
             ON CONFLICT (key_id, idempotency_key) DO NOTHING RETURNING ",
            job_columns!()
        );
        let metadata = serde_json::to_string(&new.metadata).expect("string pairs serialize");
        let inserted = sqlx::query_as::<_, JobRow>(SQL)
            .bind(new_id("job"))
            .bind(&new.tenant_id)
            .bind(&new.key_id)
            .bind(&new.endpoint)
            .bind(&new.body)
            .bind(new.webhook_url.as_deref())
            .bind(metadata)
            .bind(new.idempotency_key.as_deref())
            .bind(&new.fingerprint)
            .bind(now)
            .bind(new.reservation_id.as_deref())
            .bind(i64::from(new.reservation_clamped))
            .fetch_optional(self.writer())
            .await?;
        if let Some(row) = inserted {
            return Ok(JobInsert::Created(row));
        }
        let Some(key) = new.idempotency_key.as_deref() else {
            return Err(Error::Internal("a job without an idempotency key conflicted".into()));
        };
        self.find_job(&new.key_id, key, &new.fingerprint)
            .await?
            .ok_or_else(|| Error::Internal("the conflicting job vanished".into()))
    }

    /// The job an earlier submission of `key_id` with this Idempotency-Key
    /// made: replayed when it sent the same request (`fingerprint`).
    pub async fn find_job(
        &self,
        key_id: &str,
        idempotency_key: &str,
        fingerprint: &str,
    ) -> StoreResult<Option<JobInsert>> {
        const FIND: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE key_id = $1 AND idempotency_key = $2"
        );
        let row = sqlx::query_as::<_, JobRow>(FIND)
            .bind(key_id)
            .bind(idempotency_key)
            .fetch_optional(self.writer())
            .await?;
        Ok(row.map(|row| {
            if row.fingerprint == fingerprint {
                JobInsert::Replayed(row)
            } else {
                JobInsert::Mismatch
            }
        }))
    }

    /// The job, if the caller reaches it; otherwise `NotFound`, the same
    /// for another key's, another tenant's and a missing job.
    pub async fn get_job(&self, access: JobAccess<'_>, job_id: &str) -> StoreResult<JobRow> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3)"
        );
        sqlx::query_as::<_, JobRow>(SQL)
            .bind(access.tenant_id)
            .bind(job_id)
            .bind(owner(access))
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))
    }

    /// The job by id alone (the runner's view).
    pub async fn job(&self, job_id: &str) -> StoreResult<JobRow> {
        const SQL: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        sqlx::query_as::<_, JobRow>(SQL)
            .bind(job_id)
            .fetch_optional(self.writer())
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))
    }

    /// Whether a cancellation of the job was asked for (a running job's
    /// worker polls this, whichever process took the request).
    pub async fn job_cancel_requested(&self, job_id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some_and(|r| r.get::<i64, _>("cancel_requested") != 0))
    }

    /// A page of jobs, newest first.
    pub async fn list_jobs(&self, q: &JobQuery<'_>) -> StoreResult<Vec<JobRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE tenant_id = $1 AND ($2 = '' OR key_id = $2) \
               AND ($3 = '' OR key_id = $3) AND ($4 = '' OR status = $4) \
               AND ($6 = '' OR created_ms < $5 OR (created_ms = $5 AND id < $6)) \
             ORDER BY created_ms DESC, id DESC LIMIT $7"
        );
        let (before_ms, before_id) = q.before.unwrap_or((0, ""));
        Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(q.access.tenant_id)
            .bind(owner(q.access))
            .bind(q.key_id.unwrap_or(""))
            .bind(q.status.unwrap_or(""))
            .bind(before_ms)
            .bind(before_id)
            .bind(i64::from(q.limit))
            .fetch_all(self.pool())
            .await?)
    }

    /// Claims the oldest queued job for `instance` whose tenant has fewer
    /// than `per_tenant` jobs in progress, if any. Exactly one of
    /// concurrent claimers (in any process) gets each job.
    pub async fn claim_job(
        &self,
        instance: &str,
        now: i64,
        per_tenant: i64,
    ) -> StoreResult<Option<JobRow>> {
        macro_rules! claim_sql {
            ($lock:literal) => {
                concat!(
                    "UPDATE jobs SET status = 'in_progress', lease_owner = $1, \
                       attempts = attempts + 1, started_ms = COALESCE(started_ms, $2), \
                       updated_ms = $2 \
                     WHERE status = 'queued' AND id = (SELECT j.id FROM jobs j \
                       WHERE j.status = 'queued' AND j.run_after_ms <= $2 \
                       AND (SELECT COUNT(*) FROM jobs r WHERE r.tenant_id = j.tenant_id \
                            AND r.status = 'in_progress') < $3 \
                       ORDER BY j.created_ms, j.id LIMIT 1",
                    $lock,
                    ") RETURNING ",
                    job_columns!()
                )
            };
        }
        match self.backend() {
            Backend::Postgres => {
                // The tenant's count must not change between reading and
                // claiming: claims (not runs) take turns across processes
                // under one transaction-scoped lock.
                let mut tx = self.writer().begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7250474) IS NULL AS x")
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as::<_, JobRow>(claim_sql!(" FOR UPDATE SKIP LOCKED"))
                    .bind(instance)
                    .bind(now)
                    .bind(per_tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }
            // The single writer connection claims one at a time.
            Backend::Sqlite => Ok(sqlx::query_as::<_, JobRow>(claim_sql!(""))
                .bind(instance)
                .bind(now)
                .bind(per_tenant)
                .fetch_optional(self.writer())
                .await?),
        }
    }

    /// Marks the claimed job as about to call its endpoint. False when it
    /// may not: a cancellation came first (the job is then cancelled here),
    /// or the claim was lost.
    pub async fn dispatch_job(&self, job_id: &str, instance: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET dispatched_ms = $3, updated_ms = $3 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress' \
               AND cancel_requested = 0",
        )
        .bind(job_id)
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            // From here its call may be sent: its reservation follows the
            // process, so the ledger's crash rule settles it if that dies.
            sqlx::query(
                "UPDATE reservations SET instance_id = $2 \
                 WHERE id = (SELECT reservation_id FROM jobs WHERE id = $1)",
            )
            .bind(job_id)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        let cancelled = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_ms = $3, updated_ms = $3, \
               webhook_pending = CASE WHEN webhook_url IS NULL THEN 0 ELSE 1 END \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress' \
               AND dispatched_ms IS NULL RETURNING reservation_id",
        )
        .bind(job_id)
        .bind(instance)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Some(id)) = cancelled.map(|r| r.get::<Option<String>, _>("reservation_id")) {
            super::ledger::release_in(&mut tx, &id).await?;
        }
        tx.commit().await?;
        Ok(false)
    }

    /// Puts a job whose call the provider refused (429, 5xx: billed
    /// nothing) back in the queue until `run_after`. Its reservation went
    /// with that call; the next attempt is admitted as the synchronous call
    /// would be. False when it may not (cancelled meanwhile, claim lost).
    pub async fn retry_job(
        &self,
        job_id: &str,
        instance: &str,
        run_after: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, dispatched_ms = NULL, \
               reservation_id = NULL, run_after_ms = $3, updated_ms = $4 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress' \
               AND cancel_requested = 0",
        )
        .bind(job_id)
        .bind(instance)
        .bind(run_after)
        .bind(now)
        .execute(self.writer())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records how the job ended. A cancellation asked for while it ran
    /// turns `completed`/`failed` into `cancelled` (the answer is kept).
    /// `None` when the job is no longer this instance's to finish.
    pub async fn finish_job(
        &self,
        job_id: &str,
        instance: &str,
        outcome: &JobOutcome,
        now: i64,
    ) -> StoreResult<Option<JobRow>> {
        const SQL: &str = concat!(
            "UPDATE jobs SET \
               status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE $3 END, \
               result_status = $4, result_body = $5, cost_micros = $6, error_code = $7, \
               error_message = $8, completed_ms = $9, updated_ms = $9, \
               webhook_pending = CASE WHEN webhook_url IS NULL THEN 0 ELSE 1 END \
             WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress' RETURNING ",
            job_columns!()
        );
        let (code, message) = match &outcome.error {
            Some((c, m)) => (Some(*c), Some(m.as_str())),
            None => (None, None),
        };
        Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(job_id)
            .bind(instance)
            .bind(job_status_str(outcome.status))
            .bind(outcome.result_status.map(i64::from))
            .bind(outcome.result_body.as_deref())
            .bind(outcome.cost_micros)
            .bind(code)
            .bind(message)
            .bind(now)
            .fetch_optional(self.writer())
            .await?)
    }

    /// Cancels a queued job at once, or asks a running one to stop; a
    /// final job stays as it is. Returns the job as it is afterwards.
    pub async fn cancel_job(
        &self,
        access: JobAccess<'_>,
        job_id: &str,
        now: i64,
    ) -> StoreResult<JobRow> {
        // One statement per case, each conditional on the status it
        // changes, so a worker claiming the job at the same moment either
        // sees the cancellation or runs it and sees the request.
        // A queued job's reservation is given back with its cancellation,
        // in one transaction: it was never sent.
        let mut tx = self.writer().begin().await?;
        let cancelled = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_ms = $4, updated_ms = $4, \
               webhook_pending = CASE WHEN webhook_url IS NULL THEN 0 ELSE 1 END \
             WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3) \
               AND status = 'queued' RETURNING reservation_id",
        )
        .bind(access.tenant_id)
        .bind(job_id)
        .bind(owner(access))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Some(id)) = cancelled.map(|r| r.get::<Option<String>, _>("reservation_id")) {
            super::ledger::release_in(&mut tx, &id).await?;
        }
        tx.commit().await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_ms = $4 \
             WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3) \
               AND status = 'in_progress'",
        )
        .bind(access.tenant_id)
        .bind(job_id)
        .bind(owner(access))
        .bind(now)
        .execute(self.writer())
        .await?;
        const SQL: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        let row = sqlx::query_as::<_, JobRow>(SQL)
            .bind(job_id)
            .fetch_optional(self.writer())
            .await?
            .filter(|r| {
                r.tenant_id == access.tenant_id && access.owner.is_none_or(|k| k == r.key_id)
            });
        row.ok_or_else(|| Error::not_found("job", job_id))
    }

    /// Jobs of processes whose heartbeat is older than `cutoff_ms`: a job
    /// never dispatched goes back to the queue (its call was never sent); a
    /// dispatched one fails with `job_interrupted` and is never sent again
    /// (the ledger's crash recovery settles its call at its reservation).
    /// Returns how many went back to the queue, and the jobs failed here
    /// (for their webhooks).
    pub async fn recover_jobs(&self, cutoff_ms: i64, now: i64) -> StoreResult<(u64, Vec<JobRow>)> {
        macro_rules! dead {
            () => {
                "NOT EXISTS (SELECT 1 FROM instances i \
                 WHERE i.id = jobs.lease_owner AND i.heartbeat_ms >= $1)"
            };
        }
        const REQUEUE: &str = concat!(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, updated_ms = $2 \
             WHERE status = 'in_progress' AND dispatched_ms IS NULL AND ",
            dead!()
        );
        let requeued = sqlx::query(REQUEUE)
            .bind(cutoff_ms)
            .bind(now)
            .execute(self.writer())
            .await?
            .rows_affected();
        const FAIL: &str = concat!(
            "UPDATE jobs SET \
               status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'failed' END, \
               error_code = 'job_interrupted', error_message = $3, \
               completed_ms = $2, updated_ms = $2, \
               webhook_pending = CASE WHEN webhook_url IS NULL THEN 0 ELSE 1 END \
             WHERE status = 'in_progress' AND dispatched_ms IS NOT NULL AND ",
            dead!(),
            " RETURNING ",
            job_columns!()
        );
        let failed = sqlx::query_as::<_, JobRow>(FAIL)
            .bind(cutoff_ms)
            .bind(now)
            .bind(
                "the qlaud process running this job stopped after its call may have been sent; \
                 it is not sent again, and its call is billed at its reserved worst case",
            )
            .fetch_all(self.writer())
            .await?;
        Ok((requeued, failed))
    }

    /// Sets the job's webhook message id, once; returns the id in force.
    pub async fn job_webhook_id(&self, job_id: &str, fresh: &str) -> StoreResult<String> {
        sqlx::query("UPDATE jobs SET webhook_id = $2 WHERE id = $1 AND webhook_id IS NULL")
            .bind(job_id)
            .bind(fresh)
            .execute(self.writer())
            .await?;
        Ok(self.job(job_id).await?.webhook_id.unwrap_or_else(|| fresh.to_string()))
    }

    /// The job's webhook is delivered (or given up on).
    pub async fn job_webhook_done(&self, job_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET webhook_pending = 0 WHERE id = $1")
            .bind(job_id)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Final jobs whose webhook is still pending since before `stale_ms`
    /// (their process stopped mid-delivery), each claimed by one caller
    /// for another round of delivery.
    pub async fn claim_stale_job_webhooks(
        &self,
        stale_ms: i64,
        now: i64,
    ) -> StoreResult<Vec<JobRow>> {
        const SQL: &str = concat!(
            "UPDATE jobs SET updated_ms = $2 \
             WHERE webhook_pending = 1 AND completed_ms IS NOT NULL AND updated_ms < $1 \
             RETURNING ",
            job_columns!()
        );
        Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(stale_ms)
            .bind(now)
            .fetch_all(self.writer())
            .await?)
    }

    /// Gives back reservations held for jobs that no queued or running job
    /// owns, made before `before_ms` (on the billing clock): a submission
    /// whose process stopped between reserving and storing its job, or a
    /// job that ended before releasing. Held ones were never sent.
    pub async fn release_stray_job_reservations(&self, before_ms: i64) -> StoreResult<u64> {
        let ids: Vec<String> = sqlx::query(
            "SELECT r.id FROM reservations r WHERE r.instance_id = $1 AND r.created_ms < $2 \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.reservation_id = r.id \
                             AND j.status IN ('queued', 'in_progress')) LIMIT 1000",
        )
        .bind(HELD)
        .bind(before_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        self.release_each(ids).await
    }

    /// Deletes jobs that ended before `before_ms`, results and all (the
    /// usage of their calls stays in the ledger).
    pub async fn delete_expired_jobs(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM jobs WHERE completed_ms IS NOT NULL AND completed_ms < $1 \
               AND webhook_pending = 0",
        )
        .bind(before_ms)
        .execute(self.writer())
        .await?
        .rows_affected())
    }
}
