//! Reading the request log: its pages (newest first, filtered), spend per
//! day and model for stacked charts, and where the Stripe push stands.

use sqlx::FromRow;

use super::{Store, StoreResult};

/// Which entries of the log to read.
pub struct RequestLogQuery<'a> {
    pub tenant_id: &'a str,
    /// Empty for every key.
    pub key_id: &'a str,
    /// Empty for every model.
    pub model: &'a str,
    /// Inclusive range of statuses.
    pub status: (i64, i64),
    /// `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// The cursor: the last entry's `(created_ms, id)`; entries strictly
    /// older come next.
    pub before: Option<(i64, &'a str)>,
    pub limit: u32,
}

/// One entry as stored, with its key's name.
#[derive(Clone, Debug, FromRow)]
pub struct RequestLogRow {
    pub id: String,
    pub key_id: String,
    pub key_name: String,
    pub model: String,
    pub endpoint: String,
    pub streamed: i64,
    pub status: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    pub latency_ms: i64,
    pub created_ms: i64,
    pub recovered: i64,
}

/// The last push run of a tenant, as stored.
#[derive(Clone, Debug, FromRow)]
pub struct PushRunRow {
    pub ran_ms: i64,
    pub period: String,
    pub sent: i64,
    pub already_sent: i64,
    pub still_open: i64,
    pub failed: i64,
}

/// Totals of what Stripe accepted for a tenant.
#[derive(Clone, Debug, Default, FromRow)]
pub struct PushTotals {
    pub events: i64,
    pub micros: i64,
    pub last_ms: Option<i64>,
}

impl Store {
    pub async fn list_request_log(
        &self,
        q: &RequestLogQuery<'_>,
    ) -> StoreResult<Vec<RequestLogRow>> {
        let (before_ms, before_id) = q.before.unwrap_or((i64::MAX, ""));
        Ok(sqlx::query_as::<_, RequestLogRow>(
            "SELECT r.id, r.key_id, k.name AS key_name, r.model, r.endpoint, r.streamed, \
               r.status, r.input_tokens, r.output_tokens, r.cache_read_tokens, \
               r.cache_write_tokens, r.cost_micros, r.latency_ms, r.created_ms, r.recovered \
             FROM requests r JOIN api_keys k ON k.id = r.key_id \
             WHERE r.tenant_id = $1 AND ($2 = '' OR r.key_id = $2) AND ($3 = '' OR r.model = $3) \
               AND r.status >= $4 AND r.status <= $5 \
               AND r.created_ms >= $6 AND r.created_ms < $7 \
               AND ($9 = '' OR r.created_ms < $8 OR (r.created_ms = $8 AND r.id < $9)) \
             ORDER BY r.created_ms DESC, r.id DESC LIMIT $10",
        )
        .bind(q.tenant_id)
        .bind(q.key_id)
        .bind(q.model)
        .bind(q.status.0)
        .bind(q.status.1)
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(before_ms)
        .bind(before_id)
        .bind(i64::from(q.limit))
        .fetch_all(self.pool())
        .await?)
    }

    /// Keeps a push run's outcome as the tenant's last one.
    pub async fn record_push_run(&self, tenant_id: &str, run: &PushRunRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO stripe_push_runs (tenant_id, ran_ms, period, sent, already_sent, \
               still_open, failed) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id) DO UPDATE SET ran_ms = excluded.ran_ms, \
               period = excluded.period, sent = excluded.sent, \
               already_sent = excluded.already_sent, still_open = excluded.still_open, \
               failed = excluded.failed",
        )
        .bind(tenant_id)
        .bind(run.ran_ms)
        .bind(&run.period)
        .bind(run.sent)
        .bind(run.already_sent)
        .bind(run.still_open)
        .bind(run.failed)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// What Stripe accepted for the tenant, and its last push run.
    pub async fn push_state(
        &self,
        tenant_id: &str,
    ) -> StoreResult<(PushTotals, Option<PushRunRow>)> {
        let totals = sqlx::query_as::<_, PushTotals>(
            "SELECT COUNT(*) AS events, CAST(COALESCE(SUM(value), 0) AS BIGINT) AS micros, \
               MAX(pushed_ms) AS last_ms FROM meter_pushes WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await?;
        let run = sqlx::query_as::<_, PushRunRow>(
            "SELECT ran_ms, period, sent, already_sent, still_open, failed \
             FROM stripe_push_runs WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        Ok((totals, run))
    }
}
