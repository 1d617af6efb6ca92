//! The ledger's SQL: admission, settlement, recovery. Every statement is
//! portable between SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::OnceLock;

use sqlx::Row;

use sqlx::AnyPool;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Backend, Store, StoreResult};
use crate::error::Error;
use crate::meter::{Endpoint, RequestRecord};

/// Bigger than any cap (caps are at most 10^15 micro-dollars): what an
/// uncapped key compares against.
pub(super) const NO_CAP: i64 = 9_000_000_000_000_000_000;

/// Admits when settled + reserved + leased + this request stay within the key's
/// current cap (read inside the statement, so a changed cap applies at once),
/// the key is live, unsuspended and still on the period the caller assumed,
/// and this request fits the key's rate limits in the current window. The
/// window's counters live on the same row, so the one conditional upsert
/// admission always ran also counts the request: rate limits cost no extra
/// round trip. A window older than this request's starts over; a newer one
/// (another process's clock ahead) is counted in. Parameters: $1 key,
/// $2 period start, $3 micros, $4 period, $5 no-cap value, $6..$12 the
/// reservation row, $13 rate window start, $14 tokens, $15 and $16 the
/// default requests and tokens limits (the no-cap value when none).
macro_rules! admit_upsert {
    () => {
        "INSERT INTO key_spend (key_id, period_start_ms, settled_micros, reserved_micros, \
         rate_window_ms, rate_requests, rate_tokens) \
         SELECT $1, $2, 0, $3, $13, 1, $14 \
         WHERE EXISTS (SELECT 1 FROM api_keys k \
                      WHERE k.id = $1 AND k.period = $4 AND k.revoked_ms IS NULL \
                      AND k.disabled = 0 AND k.suspended_ms IS NULL \
                      AND $3 <= COALESCE(k.max_spend_micros, $5) \
                      AND 1 <= COALESCE(k.max_requests_per_minute, $15) \
                      AND $14 <= COALESCE(k.max_tokens_per_minute, $16)) \
         ON CONFLICT (key_id, period_start_ms) DO UPDATE \
         SET reserved_micros = key_spend.reserved_micros + excluded.reserved_micros, \
             rate_requests = CASE WHEN key_spend.rate_window_ms >= excluded.rate_window_ms \
                             THEN key_spend.rate_requests + 1 ELSE 1 END, \
             rate_tokens = CASE WHEN key_spend.rate_window_ms >= excluded.rate_window_ms \
                           THEN key_spend.rate_tokens + excluded.rate_tokens \
                           ELSE excluded.rate_tokens END, \
             rate_window_ms = CASE WHEN key_spend.rate_window_ms >= excluded.rate_window_ms \
                              THEN key_spend.rate_window_ms ELSE excluded.rate_window_ms END \
         WHERE EXISTS (SELECT 1 FROM api_keys k \
                   WHERE k.id = excluded.key_id AND k.period = $4 \
                   AND k.revoked_ms IS NULL AND k.disabled = 0 AND k.suspended_ms IS NULL \
                   AND key_spend.settled_micros + key_spend.reserved_micros \
                       + key_spend.leased_micros + excluded.reserved_micros \
                       <= COALESCE(k.max_spend_micros, $5) \
                   AND (CASE WHEN key_spend.rate_window_ms >= excluded.rate_window_ms \
                        THEN key_spend.rate_requests ELSE 0 END) + 1 \
                       <= COALESCE(k.max_requests_per_minute, $15) \
                   AND (CASE WHEN key_spend.rate_window_ms >= excluded.rate_window_ms \
                        THEN key_spend.rate_tokens ELSE 0 END) + excluded.rate_tokens \
                       <= COALESCE(k.max_tokens_per_minute, $16))"
    };
}

const RESERVE_POSTGRES: &str = concat!(
    "WITH admitted AS (",
    admit_upsert!(),
    " RETURNING key_id, rate_window_ms, rate_requests, rate_tokens), \
     placed AS (INSERT INTO reservations (id, tenant_id, key_id, period_start_ms, model, \
     provider, endpoint, reserved_micros, instance_id, created_ms) \
     SELECT $6, $7, $1, $2, $8, $9, $10, $3, $11, $12 FROM admitted RETURNING id) \
     SELECT CAST(1 AS BIGINT) AS admitted, a.rate_window_ms, a.rate_requests, a.rate_tokens, \
     k.max_requests_per_minute AS key_rpm, k.max_tokens_per_minute AS key_tpm \
     FROM admitted a JOIN placed p ON TRUE JOIN api_keys k ON k.id = a.key_id"
);

/// What an admission counted in its key's rate window: the window, the
/// requests and tokens in it with this one, and the key's own limits. Read
/// by the admitting statement itself, so the answer's rate-limit headers
/// cost no extra round trip.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateCounted {
    pub window_ms: i64,
    pub requests: i64,
    pub tokens: i64,
    pub requests_limit: Option<i64>,
    pub tokens_limit: Option<i64>,
}

impl RateCounted {
    fn read(row: &sqlx::any::AnyRow) -> Result<RateCounted, sqlx::Error> {
        Ok(RateCounted {
            window_ms: row.try_get("rate_window_ms")?,
            requests: row.try_get("rate_requests")?,
            tokens: row.try_get("rate_tokens")?,
            requests_limit: row.try_get("key_rpm")?,
            tokens_limit: row.try_get("key_tpm")?,
        })
    }
}

/// A request to admit.
pub struct NewReservation<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub key_id: &'a str,
    /// The key's period as the caller believes it; admission fails if the
    /// key's period has changed since.
    pub period: &'a str,
    pub period_start_ms: i64,
    pub model: &'a str,
    pub provider: &'a str,
    pub endpoint: &'a str,
    pub micros: i64,
    pub instance_id: &'a str,
    pub now_ms: i64,
    /// What the request counts against the key's rate limits.
    pub rate: RateCount,
}

/// A request as the rate limits count it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateCount {
    /// The start of the current window.
    pub window_ms: i64,
    /// Its reserved tokens.
    pub tokens: i64,
    /// The tenant's defaults, for keys without their own.
    pub default_requests: Option<i64>,
    pub default_tokens: Option<i64>,
}

/// A reservation waiting for the SQLite admission batch, and where its
/// answer goes.
pub(super) struct ReserveJob {
    id: String,
    tenant_id: String,
    key_id: String,
    period: String,
    period_start_ms: i64,
    model: String,
    provider: String,
    endpoint: String,
    micros: i64,
    instance_id: String,
    now_ms: i64,
    rate: RateCount,
    answer: oneshot::Sender<StoreResult<Option<RateCounted>>>,
}

/// Parameters of one admission.
const ADMIT_PARAMS: usize = 16;

/// Jobs one admission batch takes at most (16 parameters each).
const ADMIT_BATCH: usize = 32;

/// Runs admissions in batches: all admissions waiting at a moment go in
/// one transaction, each still its own conditional upsert, so one commit
/// (one WAL flush) serves many requests. SQLite takes a batch as one
/// script on its single writer, in arrival order, one batch at a time.
/// PostgreSQL runs up to [`PG_BATCHES`] batches at once, each on its own
/// connection: a lone admission is its one statement as before, a batch is
/// one statement per admission in one transaction, in key order, so
/// batches (of this process or another) lock the keys' rows in one order
/// and wait for each other instead of deadlocking.
pub(super) fn spawn_admitter(writer: AnyPool, backend: Backend) -> mpsc::Sender<ReserveJob> {
    let (tx, mut rx) = mpsc::channel::<ReserveJob>(4096);
    let running = Arc::new(Semaphore::new(match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => PG_BATCHES,
    }));
    tokio::spawn(async move {
        loop {
            // Waiting for a free slot first lets the next batch fill up
            // meanwhile.
            let slot = running.clone().acquire_owned().await.expect("never closed");
            let mut jobs = Vec::with_capacity(ADMIT_BATCH);
            if rx.recv_many(&mut jobs, ADMIT_BATCH).await == 0 {
                break;
            }
            let writer = writer.clone();
            tokio::spawn(async move {
                run_batch(&writer, backend, jobs).await;
                drop(slot);
            });
        }
    });
    tx
}

/// Admission batches PostgreSQL runs at once (connections they hold).
const PG_BATCHES: usize = 4;

async fn run_batch(writer: &AnyPool, backend: Backend, mut jobs: Vec<ReserveJob>) {
    match admit_batch(writer, backend, &jobs).await {
        Ok(results) => {
            for (job, ok) in jobs.drain(..).zip(results) {
                let _ = job.answer.send(Ok(ok));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "admission batch failed; retrying one by one");
            for job in jobs.drain(..) {
                let one = admit_batch(writer, backend, std::slice::from_ref(&job)).await;
                let _ = job.answer.send(one.map(|r| r[0]).map_err(Into::into));
            }
        }
    }
}

async fn admit_batch(
    writer: &AnyPool,
    backend: Backend,
    jobs: &[ReserveJob],
) -> Result<Vec<Option<RateCounted>>, sqlx::Error> {
    match backend {
        Backend::Sqlite => {
            let out = admit_batch_sqlite(writer, jobs).await;
            if out.is_err() {
                let _ = sqlx::query("ROLLBACK").execute(writer).await;
            }
            out
        }
        Backend::Postgres => admit_batch_postgres(writer, jobs).await,
    }
}

/// One transaction (rolled back when dropped on an error).
async fn admit_batch_postgres(
    writer: &AnyPool,
    jobs: &[ReserveJob],
) -> Result<Vec<Option<RateCounted>>, sqlx::Error> {
    if let [job] = jobs {
        // Alone: its one statement is its transaction.
        let row = bind_job(sqlx::query(RESERVE_POSTGRES), job).fetch_optional(writer).await?;
        return Ok(vec![admitted(row.as_ref())?]);
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| jobs[a].key_id.cmp(&jobs[b].key_id));
    let mut tx = writer.begin().await?;
    let mut out = vec![None; jobs.len()];
    for i in order {
        let row =
            bind_job(sqlx::query(RESERVE_POSTGRES), &jobs[i]).fetch_optional(&mut *tx).await?;
        out[i] = admitted(row.as_ref())?;
    }
    tx.commit().await?;
    Ok(out)
}

/// What the admitting statement's row says: no row is a refusal.
fn admitted(row: Option<&sqlx::any::AnyRow>) -> Result<Option<RateCounted>, sqlx::Error> {
    match row {
        Some(row) if row.try_get::<i64, _>("admitted")? == 1 => Ok(Some(RateCounted::read(row)?)),
        _ => Ok(None),
    }
}

/// Binds one admission's 16 parameters.
fn bind_job<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    j: &'q ReserveJob,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(j.key_id.as_str())
        .bind(j.period_start_ms)
        .bind(j.micros)
        .bind(j.period.as_str())
        .bind(NO_CAP)
        .bind(j.id.as_str())
        .bind(j.tenant_id.as_str())
        .bind(j.model.as_str())
        .bind(j.provider.as_str())
        .bind(j.endpoint.as_str())
        .bind(j.instance_id.as_str())
        .bind(j.now_ms)
        .bind(j.rate.window_ms)
        .bind(j.rate.tokens)
        .bind(j.rate.default_requests.unwrap_or(NO_CAP))
        .bind(j.rate.default_tokens.unwrap_or(NO_CAP))
}

/// The SQLite admission script for `n` jobs: each job's upsert, its
/// reservation row if the upsert admitted, and a row saying which.
fn sqlite_batch_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    super::sized_sql(&SQL, ADMIT_BATCH, n, |n| {
        let mut s = String::from("BEGIN IMMEDIATE;");
        for j in 0..n {
            let mut one = format!(
                "{}; INSERT INTO reservations (id, tenant_id, key_id, period_start_ms, model, \
                         provider, endpoint, reserved_micros, instance_id, created_ms) \
                         SELECT $6, $7, $1, $2, $8, $9, $10, $3, $11, $12 WHERE changes() = 1; \
                         SELECT CAST(changes() AS BIGINT) AS admitted, CAST({j} AS BIGINT) AS job, \
                         s.rate_window_ms, s.rate_requests, s.rate_tokens, \
                         k.max_requests_per_minute AS key_rpm, \
                         k.max_tokens_per_minute AS key_tpm \
                         FROM api_keys k JOIN key_spend s \
                         ON s.key_id = k.id AND s.period_start_ms = $2 WHERE k.id = $1;",
                admit_upsert!()
            );
            // Renumber $1..$16 to this job's parameters: first to
            // delimited tokens, highest first so `$1` never matches
            // the start of `$12`, then to the job's numbers.
            for p in (1..=ADMIT_PARAMS).rev() {
                one = one.replace(&format!("${p}"), &format!("#{p}#"));
            }
            for p in 1..=ADMIT_PARAMS {
                one = one.replace(&format!("#{p}#"), &format!("${}", ADMIT_PARAMS * j + p));
            }
            s.push_str(&one);
        }
        s.push_str(" COMMIT");
        s
    })
}

async fn admit_batch_sqlite(
    writer: &AnyPool,
    jobs: &[ReserveJob],
) -> Result<Vec<Option<RateCounted>>, sqlx::Error> {
    let mut q = sqlx::query(sqlite_batch_sql(jobs.len()));
    for j in jobs {
        q = bind_job(q, j);
    }
    let rows = q.fetch_all(writer).await?;
    // A job whose key has no spend row (the key is gone) returns no row:
    // refused, as its upsert was.
    let mut out = vec![None; jobs.len()];
    for row in rows {
        let job: i64 = row.try_get("job")?;
        if row.try_get::<i64, _>("admitted")? == 1 {
            out[job as usize] = Some(RateCounted::read(&row)?);
        }
    }
    Ok(out)
}

/// A key's cap state, for explaining a refusal and for clamping.
pub struct CapState {
    pub cap_micros: Option<i64>,
    pub period: String,
    pub usable: bool,
    /// Suspended for a failed payment.
    pub suspended: bool,
    /// Settled plus reserved and leased in the window asked about.
    pub committed_micros: i64,
    /// Held by requests in flight and by leases.
    pub reserved_micros: i64,
    /// The key's own rate limits.
    pub max_requests_per_minute: Option<i64>,
    pub max_tokens_per_minute: Option<i64>,
    /// The latest rate window counted and what it holds.
    pub rate_window_ms: i64,
    pub rate_requests: i64,
    pub rate_tokens: i64,
}

impl Store {
    /// Holds `micros` of the key's budget for one request, if the cap
    /// allows, in one transaction: the conditional upsert decides, the
    /// reservation row records it. `None`: refused (over the cap, or the
    /// key changed: revoked, disabled, other period); else what the
    /// request was counted as in its rate window.
    pub async fn reserve(&self, r: &NewReservation<'_>) -> StoreResult<Option<RateCounted>> {
        // Through the admitter, which commits the admissions waiting at a
        // moment together: the conditional upsert decides and the
        // reservation row is written only if it admitted.
        let (answer, result) = oneshot::channel();
        let job = ReserveJob {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            key_id: r.key_id.to_string(),
            period: r.period.to_string(),
            period_start_ms: r.period_start_ms,
            model: r.model.to_string(),
            provider: r.provider.to_string(),
            endpoint: r.endpoint.to_string(),
            micros: r.micros,
            instance_id: r.instance_id.to_string(),
            now_ms: r.now_ms,
            rate: r.rate,
            answer,
        };
        let stopped = || Error::Internal("the admitter stopped".into());
        self.admitter.send(job).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// The key's cap, period, whether it may be used, and what is committed
    /// in the window starting at `period_start_ms`.
    pub async fn cap_state(
        &self,
        key_id: &str,
        period_start_ms: i64,
    ) -> StoreResult<Option<CapState>> {
        let row = sqlx::query(
            "SELECT k.max_spend_micros, k.period, k.disabled, k.revoked_ms, k.suspended_ms, \
             COALESCE((SELECT s.settled_micros + s.reserved_micros + s.leased_micros \
                       FROM key_spend s WHERE s.key_id = k.id AND s.period_start_ms = $2), 0) \
                       AS committed, \
             COALESCE((SELECT s.reserved_micros + s.leased_micros FROM key_spend s \
                       WHERE s.key_id = k.id AND s.period_start_ms = $2), 0) AS reserved, \
             k.max_requests_per_minute, k.max_tokens_per_minute, \
             COALESCE((SELECT s.rate_window_ms FROM key_spend s \
                       WHERE s.key_id = k.id AND s.period_start_ms = $2), 0) AS rate_window_ms, \
             COALESCE((SELECT s.rate_requests FROM key_spend s \
                       WHERE s.key_id = k.id AND s.period_start_ms = $2), 0) AS rate_requests, \
             COALESCE((SELECT s.rate_tokens FROM key_spend s \
                       WHERE s.key_id = k.id AND s.period_start_ms = $2), 0) AS rate_tokens \
             FROM api_keys k WHERE k.id = $1",
        )
        .bind(key_id)
        .bind(period_start_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CapState {
            cap_micros: row.try_get("max_spend_micros")?,
            period: row.try_get("period")?,
            usable: row.try_get::<i64, _>("disabled")? == 0
                && row.try_get::<Option<i64>, _>("revoked_ms")?.is_none(),
            suspended: row.try_get::<Option<i64>, _>("suspended_ms")?.is_some(),
            committed_micros: row.try_get("committed")?,
            reserved_micros: row.try_get("reserved")?,
            max_requests_per_minute: row.try_get("max_requests_per_minute")?,
            max_tokens_per_minute: row.try_get("max_tokens_per_minute")?,
            rate_window_ms: row.try_get("rate_window_ms")?,
            rate_requests: row.try_get("rate_requests")?,
            rate_tokens: row.try_get("rate_tokens")?,
        }))
    }

    /// Settles finished requests, each exactly once: a record whose
    /// reservation is already gone (settled by crash recovery, say) is
    /// skipped. Returns how many were settled.
    pub async fn settle(&self, records: &[RequestRecord]) -> StoreResult<usize> {
        let mut settled = 0;
        for chunk in records.chunks(super::MAX_BATCH) {
            let mut tx = self.writer().begin().await?;
            settled += settle_in(&mut tx, chunk).await?.len();
            tx.commit().await?;
        }
        Ok(settled)
    }

    /// Reservations held by processes that stopped sending heartbeats
    /// before `cutoff_ms` (or never registered), oldest first.
    pub async fn orphaned_reservations(
        &self,
        cutoff_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<RequestRecord>> {
        let rows = sqlx::query(
            "SELECT r.id, r.tenant_id, r.key_id, r.period_start_ms, r.model, r.provider, \
             r.endpoint, r.reserved_micros, r.created_ms FROM reservations r \
             WHERE r.instance_id <> $3 AND r.instance_id <> $4 AND r.endpoint <> $5 \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = r.instance_id \
                               AND i.heartbeat_ms >= $1) \
             ORDER BY r.created_ms LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(limit)
        // A held video reservation waits for its poll, not a heartbeat.
        .bind(super::videos::HELD)
        // Nor does a job's, held from its submission until it is sent.
        .bind(super::jobs::HELD)
        // Turn embeddings are released instead: see below.
        .bind(Endpoint::TurnEmbeddings.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| -> StoreResult<RequestRecord> {
                let (id, reserved) = (row.try_get("id")?, row.try_get("reserved_micros")?);
                Ok(recovered_record(row, id, None, reserved)?)
            })
            .collect()
    }

    /// Gives back the turn-embedding reservations of processes that
    /// stopped before `cutoff_ms`. Such a reservation is settled in the
    /// same transaction that stores its turns' vectors, so one still open
    /// means the vectors were never stored: the turns are still queued and
    /// will be embedded, and billed, again. Settling it as well would bill
    /// them twice. Returns how many were given back.
    pub async fn release_orphaned_turn_embeddings(&self, cutoff_ms: i64) -> StoreResult<u64> {
        let ids: Vec<String> = sqlx::query(
            "SELECT r.id FROM reservations r WHERE r.endpoint = $2 \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = r.instance_id \
                               AND i.heartbeat_ms >= $1) LIMIT 1000",
        )
        .bind(cutoff_ms)
        .bind(Endpoint::TurnEmbeddings.as_str())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        self.release_each(ids).await
    }

    /// Gives back each of `ids` still open; how many were.
    pub(super) async fn release_each(&self, ids: Vec<String>) -> StoreResult<u64> {
        let mut n = 0;
        for id in ids {
            n += u64::from(self.release(&id).await?);
        }
        Ok(n)
    }

    /// A reservation's row, if it is still open.
    pub async fn reservation(&self, id: &str) -> StoreResult<Option<HeldReservation>> {
        let row = sqlx::query(
            "SELECT id, key_id, model, reserved_micros, period_start_ms FROM reservations \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.writer())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(HeldReservation {
            id: row.try_get("id")?,
            key_id: row.try_get("key_id")?,
            model: row.try_get("model")?,
            reserved_micros: row.try_get("reserved_micros")?,
            period_start_ms: row.try_get("period_start_ms")?,
            clamped: false,
        }))
    }

    /// Gives a reservation back whole, for a call that was never sent
    /// (a job cancelled or refused before its call): no request is
    /// recorded. False when it was already settled or released.
    pub async fn release(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        let released = release_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Forgets processes silent for a day that hold no reservations.
    pub async fn prune_instances(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM instances WHERE heartbeat_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.instance_id = instances.id)",
        )
        .bind(before_ms)
        .execute(self.writer())
        .await?
        .rows_affected())
    }

    /// Says this process is alive.
    pub async fn heartbeat(&self, instance_id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO instances (id, heartbeat_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
        )
        .bind(instance_id)
        .bind(now_ms)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Open reservations of all processes (for /metrics).
    pub async fn open_reservations(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM reservations")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }
}

/// The record settling a stopped process's reservation or lease (`row`:
/// its tenant, key, model, provider, endpoint, window and creation) at
/// `amount`, all it held: its usage was never seen, and its tokens stay
/// counted against the rate limits.
pub(super) fn recovered_record(
    row: &sqlx::any::AnyRow,
    id: String,
    lease_id: Option<String>,
    amount: i64,
) -> Result<RequestRecord, sqlx::Error> {
    Ok(RequestRecord {
        reservation_id: id,
        lease_id,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        endpoint: Endpoint::parse(&row.try_get::<String, _>("endpoint")?),
        streamed: false,
        status: 0,
        usage: Default::default(),
        quantities: Default::default(),
        cost_micros: amount,
        reserved_micros: amount,
        period_start_ms: row.try_get("period_start_ms")?,
        rate_window_ms: 0,
        reserved_tokens: 0,
        latency_ms: 0,
        created_ms: row.try_get("created_ms")?,
        recovered: true,
    })
}

/// An open reservation, as a call made later takes it over.
#[derive(Clone, Debug)]
pub struct HeldReservation {
    pub id: String,
    pub key_id: String,
    pub model: String,
    pub reserved_micros: i64,
    pub period_start_ms: i64,
    /// Admission clamped its output limit to fit the budget: the call
    /// keeps to what it pays for.
    pub clamped: bool,
}

/// Deletes the reservation and gives its amount back to its key, inside
/// `tx`; deleting decides, so it is released (or settled) once.
pub(super) async fn release_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "DELETE FROM reservations WHERE id = $1 \
         RETURNING key_id, period_start_ms, reserved_micros",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    sqlx::query(
        "UPDATE key_spend SET reserved_micros = reserved_micros - $3 \
         WHERE key_id = $1 AND period_start_ms = $2",
    )
    .bind(row.try_get::<String, _>("key_id")?)
    .bind(row.try_get::<i64, _>("period_start_ms")?)
    .bind(row.try_get::<i64, _>("reserved_micros")?)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Settles up to [`super::MAX_BATCH`] records inside `tx`, each exactly
/// once: a record whose reservation is already gone (settled by crash
/// recovery, say) is skipped, as is one admitted under a lease crash
/// recovery settled (its lease paid for it). Returns the records it
/// settled.
pub(super) async fn settle_in<'r>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    chunk: &'r [RequestRecord],
) -> StoreResult<Vec<&'r RequestRecord>> {
    let (leased, reserved): (Vec<&RequestRecord>, Vec<&RequestRecord>) =
        chunk.iter().partition(|r| r.lease_id.is_some());
    let mut live = Vec::with_capacity(chunk.len());
    if !reserved.is_empty() {
        let deleted = returned_ids(tx, delete_sql(reserved.len()), &reserved).await?;
        live.extend(reserved.into_iter().filter(|r| deleted.contains(&r.reservation_id)));
    }
    if !leased.is_empty() {
        live.extend(claim_leased(tx, leased).await?);
    }
    if !live.is_empty() {
        apply_in(tx, &live).await?;
    }
    Ok(live)
}

/// Of records admitted under leases, those to settle now: not written
/// before (a batch retried after a commit whose answer was lost), and
/// whose lease still holds their cost, which moves out of it here.
async fn claim_leased<'r>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: Vec<&'r RequestRecord>,
) -> StoreResult<Vec<&'r RequestRecord>> {
    let written = returned_ids(tx, written_sql(records.len()), &records).await?;
    let mut per_lease: std::collections::BTreeMap<&str, (i64, Vec<&'r RequestRecord>)> =
        Default::default();
    for r in records.into_iter().filter(|r| !written.contains(&r.reservation_id)) {
        let e = per_lease.entry(r.lease_id.as_deref().unwrap_or_default()).or_default();
        e.0 += r.cost_micros;
        e.1.push(r);
    }
    let mut live = Vec::new();
    // In lease order (then key order, in `apply_in`), as every
    // transaction that touches both takes them.
    for (lease, (cost, records)) in per_lease {
        let moved = sqlx::query(
            "UPDATE leases SET amount_micros = amount_micros - $2 \
             WHERE id = $1 AND amount_micros >= $2",
        )
        .bind(lease)
        .bind(cost)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if moved == 1 {
            live.extend(records);
        } else {
            tracing::warn!(
                lease,
                requests = records.len(),
                "requests of a lease crash recovery already settled: billed in it"
            );
        }
    }
    Ok(live)
}

/// Writes settled records inside `tx`: moves each one's cost from what
/// its reservation or lease held to settled spend, gives back the rest of
/// a reservation, and logs the requests.
pub(super) async fn apply_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    live: &[&RequestRecord],
) -> StoreResult<()> {
    // Per key, period and rate window: the reserved and leased amounts to
    // release, the spend to settle and the reserved tokens that went
    // unused, given back to the window they were counted in (if it is
    // still the key's current one).
    let mut spend: HashMap<(&str, i64, i64), [i64; 4]> = HashMap::new();
    for r in live {
        let e = spend.entry((r.key_id.as_str(), r.period_start_ms, r.rate_window_ms)).or_default();
        if r.lease_id.is_some() {
            // What it did not cost stays in the lease.
            e[1] += r.cost_micros;
        } else {
            e[0] += r.reserved_micros;
        }
        e[2] += r.cost_micros;
        if !r.recovered {
            e[3] += (r.reserved_tokens - r.usage.total_tokens()).max(0);
        }
    }
    // In one order in every transaction, so two processes settling the
    // same keys wait for each other instead of deadlocking.
    let mut spend: Vec<_> = spend.into_iter().collect();
    spend.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for ((key_id, start, window), [reserved, leased, cost, unused]) in spend {
        sqlx::query(
            "UPDATE key_spend SET reserved_micros = reserved_micros - $3, \
             leased_micros = leased_micros - $7, \
             settled_micros = settled_micros + $4, \
             rate_tokens = CASE WHEN rate_window_ms = $5 AND rate_tokens >= $6 \
                           THEN rate_tokens - $6 ELSE rate_tokens END \
             WHERE key_id = $1 AND period_start_ms = $2",
        )
        .bind(key_id)
        .bind(start)
        .bind(reserved)
        .bind(cost)
        .bind(window)
        .bind(unused)
        .bind(leased)
        .execute(&mut **tx)
        .await?;
    }
    super::requests::insert_requests(tx, live).await
}

/// `SELECT id FROM requests WHERE id IN (…)` for `n` ids.
fn written_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    in_list_sql(&SQL, n, |ids| format!("SELECT id FROM requests WHERE id IN ({ids})"))
}

/// The ids `sql` (one parameter per record) returns for the records' ids.
async fn returned_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sql: &'static str,
    records: &[&RequestRecord],
) -> StoreResult<Vec<String>> {
    let mut q = sqlx::query(sql);
    for r in records {
        q = q.bind(r.reservation_id.as_str());
    }
    Ok(q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// A statement on a list of `n` parameters (`$1, …, $n`), built once per
/// size (sqlx takes only static SQL).
fn in_list_sql(
    cache: &'static OnceLock<Vec<&'static str>>,
    n: usize,
    text: fn(&str) -> String,
) -> &'static str {
    super::sized_sql(cache, super::MAX_BATCH, n, |n| {
        let ids: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        text(&ids.join(", "))
    })
}

/// `DELETE FROM reservations WHERE id IN (…) RETURNING id` for `n` ids.
fn delete_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    in_list_sql(&SQL, n, |ids| format!("DELETE FROM reservations WHERE id IN ({ids}) RETURNING id"))
}
