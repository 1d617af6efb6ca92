//! The search index as stored: the queue of turns waiting to be embedded
//! and their vectors. Every search names the tenant (and, for a standard
//! key, the owner key) inside the index query itself, so no parameter can
//! reach another tenant's rows and `limit` counts only rows the caller may
//! see.

use sqlx::{FromRow, Row};

use super::{Backend, Store, StoreResult};
use crate::meter::RequestRecord;

/// How a store answers a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorIndex {
    /// Cosine distance over every row the caller may see: SQLite
    /// (sqlite-vec), and PostgreSQL with a pgvector older than 0.5 (no
    /// HNSW).
    Exact,
    /// pgvector's HNSW index with iterative scans (0.8 and later): the
    /// scan goes on until `limit` rows pass the filter.
    Hnsw,
    /// pgvector's HNSW index without iterative scans (0.5 to 0.7): one
    /// scan of [`ef_search`] candidates, filtered; when fewer than `limit`
    /// pass the filter (a caller with few rows among many), the same
    /// query is answered by an exact scan of the caller's rows instead.
    HnswOrExact,
}

/// Candidates an HNSW scan collects (pgvector's `hnsw.ef_search`, which
/// allows 1 to 1000): more than the default 40, since the tenant filter
/// drops the candidates of other callers, and more for larger limits.
pub fn ef_search(limit: u32) -> u32 {
    (limit.saturating_mul(10)).clamp(200, 1000)
}

/// A claimed turn, with what its vector is stored under.
#[derive(Clone, Debug, FromRow)]
pub struct PendingTurn {
    pub message_id: String,
    pub thread_id: String,
    pub tenant_id: String,
    /// The thread's owner key.
    pub key_id: String,
    pub role: String,
    /// Anthropic content blocks, as stored.
    pub content: String,
    pub created_ms: i64,
}

/// A turn's vector to store; `vector: None` drops the turn from the queue
/// without one (it has no text).
#[derive(Clone, Debug)]
pub struct NewVector<'a> {
    pub turn: &'a PendingTurn,
    pub text: String,
    pub vector: Option<Vec<f32>>,
}

/// The turns of one owner key embedded together, and the request billing
/// them (`None`: nothing to bill: turns without text, or dropped).
#[derive(Clone, Debug)]
pub struct IndexedGroup<'a> {
    pub turns: Vec<NewVector<'a>>,
    pub record: Option<RequestRecord>,
}

/// A claimed turn put back in the queue, not to be claimed again before
/// `not_before_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Deferral<'a> {
    pub message_id: &'a str,
    pub not_before_ms: i64,
    pub reason: &'a str,
}

/// What a search reaches and asks.
#[derive(Clone, Debug)]
pub struct VectorQuery<'a> {
    pub tenant_id: &'a str,
    /// A standard key's own id: only its threads. `None`: the tenant's.
    pub owner: Option<&'a str>,
    /// An admin's filter by key.
    pub key_id: Option<&'a str>,
    pub thread_id: Option<&'a str>,
    pub role: Option<&'a str>,
    /// `[from_ms, to_ms)` on the message's time.
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: u32,
    pub vector: &'a [f32],
}

/// A hit as stored.
#[derive(Clone, Debug, FromRow)]
pub struct HitRow {
    pub message_id: String,
    pub thread_id: String,
    pub role: String,
    pub text: String,
    pub created_ms: i64,
    pub score: f64,
}

/// pgvector's text form, `[0.1,0.2,…]`; sqlite-vec reads it too.
fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 12 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Store {
    /// PostgreSQL: makes the pgvector column and its HNSW index, once per
    /// store; `None` without pgvector. SQLite always has its index
    /// (sqlite-vec is linked in).
    pub async fn prepare_vector_index(&self) -> StoreResult<Option<VectorIndex>> {
        if self.backend() == Backend::Sqlite {
            return Ok(Some(VectorIndex::Exact));
        }
        let mut tx = self.writer().begin().await?;
        // Processes starting together take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(7331001)").execute(&mut *tx).await?;
        let available: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS ok",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("ok")?;
        if !available {
            tx.rollback().await?;
            return Ok(None);
        }
        for sql in [
            "CREATE EXTENSION IF NOT EXISTS vector",
            "ALTER TABLE turn_vectors ADD COLUMN IF NOT EXISTS embedding_v vector(384)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        let version: String =
            sqlx::query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                .fetch_one(&mut *tx)
                .await?
                .try_get("extversion")?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let index = if (major, minor) >= (0, 8) {
            VectorIndex::Hnsw
        } else if (major, minor) >= (0, 5) {
            tracing::info!(
                version,
                "pgvector older than 0.8 cannot continue a filtered HNSW scan: a search whose \
                 filter leaves fewer than its limit among the scan's candidates falls back to \
                 an exact scan of the caller's rows (pgvector 0.8 does better)"
            );
            VectorIndex::HnswOrExact
        } else {
            tracing::warn!(
                version,
                "pgvector older than 0.5 has no HNSW index: searches scan the caller's rows \
                 exactly (upgrade pgvector for the index)"
            );
            VectorIndex::Exact
        };
        if index != VectorIndex::Exact {
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS turn_vectors_hnsw ON turn_vectors \
                 USING hnsw (embedding_v vector_cosine_ops)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(index))
    }

    /// Claims up to `limit` queued turns for `instance`: those nobody
    /// holds, and those held by a process whose heartbeat is older than
    /// `alive_since` (it died mid-batch), leaving out turns deferred past
    /// `now` (their owner key could not pay). Returns them with what their
    /// vectors are stored under; turns whose message is gone cascade away.
    pub async fn claim_turns(
        &self,
        instance: &str,
        alive_since: i64,
        now: i64,
        limit: u32,
    ) -> StoreResult<Vec<PendingTurn>> {
        macro_rules! claim_sql {
            ($lock:literal) => {
                concat!(
                    "UPDATE embed_queue SET claimed_by = $1, attempts = attempts + 1 \
                     WHERE message_id IN (SELECT q.message_id FROM embed_queue q \
                       WHERE (q.claimed_by IS NULL OR q.claimed_by NOT IN \
                         (SELECT id FROM instances WHERE heartbeat_ms >= $2)) \
                       AND NOT EXISTS (SELECT 1 FROM embed_deferrals d \
                         WHERE d.message_id = q.message_id AND d.not_before_ms > $4) \
                       ORDER BY q.enqueued_ms, q.message_id LIMIT $3",
                    $lock,
                    ")"
                )
            };
        }
        let sql = match self.backend() {
            Backend::Postgres => claim_sql!(" FOR UPDATE OF q SKIP LOCKED"),
            Backend::Sqlite => claim_sql!(""),
        };
        let claimed = sqlx::query(sql)
            .bind(instance)
            .bind(alive_since)
            .bind(i64::from(limit))
            .bind(now)
            .execute(self.writer())
            .await?
            .rows_affected();
        if claimed == 0 {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as::<_, PendingTurn>(
            "SELECT m.id AS message_id, m.thread_id, m.tenant_id, t.key_id, m.role, m.content, \
               m.created_ms \
             FROM embed_queue q JOIN thread_messages m ON m.id = q.message_id \
               JOIN threads t ON t.id = m.thread_id \
             WHERE q.claimed_by = $1 ORDER BY q.enqueued_ms, q.message_id",
        )
        .bind(instance)
        .fetch_all(self.writer())
        .await?)
    }

    /// Ends a pass of the indexer, in one transaction: stores each group's
    /// vectors and settles the request billing them, takes the group's
    /// turns off the queue, and puts the deferred turns back with the time
    /// before which they are not claimed again. A group some of whose
    /// turns this process no longer holds (its claim went stale and
    /// another process took them, which will embed and bill them) is
    /// neither stored nor billed: its reservation is given back and the
    /// turns it still holds are released. A vector already stored stays
    /// as it was. Returns the settled requests.
    pub async fn store_vectors(
        &self,
        instance: &str,
        groups: &[IndexedGroup<'_>],
        deferred: &[Deferral<'_>],
    ) -> StoreResult<Vec<RequestRecord>> {
        let mut tx = self.writer().begin().await?;
        let held_sql = match self.backend() {
            Backend::Sqlite => "SELECT message_id FROM embed_queue WHERE claimed_by = $1",
            Backend::Postgres => {
                "SELECT message_id FROM embed_queue WHERE claimed_by = $1 FOR UPDATE"
            }
        };
        let held: std::collections::HashSet<String> = sqlx::query(held_sql)
            .bind(instance)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("message_id"))
            .collect::<Result<_, _>>()?;
        for d in deferred {
            sqlx::query(
                "INSERT INTO embed_deferrals (message_id, not_before_ms, reason) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM thread_messages WHERE id = $1) \
                 ON CONFLICT (message_id) DO UPDATE \
                 SET not_before_ms = excluded.not_before_ms, reason = excluded.reason",
            )
            .bind(d.message_id)
            .bind(d.not_before_ms)
            .bind(d.reason)
            .execute(&mut *tx)
            .await?;
            release_claim(&mut tx, instance, d.message_id).await?;
        }
        let insert = match self.backend() {
            Backend::Sqlite => {
                "INSERT INTO turn_vectors (message_id, tenant_id, key_id, thread_id, role, text, \
                   created_ms, embedding) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                 WHERE EXISTS (SELECT 1 FROM thread_messages WHERE id = $1) \
                 ON CONFLICT (message_id) DO NOTHING"
            }
            Backend::Postgres => {
                "INSERT INTO turn_vectors (message_id, tenant_id, key_id, thread_id, role, text, \
                   created_ms, embedding_v) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, CAST($8 AS vector) \
                 WHERE EXISTS (SELECT 1 FROM thread_messages WHERE id = $1) \
                 ON CONFLICT (message_id) DO NOTHING"
            }
        };
        let mut records = Vec::new();
        for group in groups {
            if !group.turns.iter().all(|v| held.contains(&v.turn.message_id)) {
                if let Some(r) = &group.record {
                    super::ledger::release_in(&mut tx, &r.reservation_id).await?;
                }
                for v in &group.turns {
                    release_claim(&mut tx, instance, &v.turn.message_id).await?;
                }
                continue;
            }
            for v in &group.turns {
                let Some(vector) = &v.vector else { continue };
                let t = v.turn;
                let q = sqlx::query(insert)
                    .bind(&t.message_id)
                    .bind(&t.tenant_id)
                    .bind(&t.key_id)
                    .bind(&t.thread_id)
                    .bind(&t.role)
                    .bind(&v.text)
                    .bind(t.created_ms);
                let q = match self.backend() {
                    Backend::Sqlite => q.bind(vector_blob(vector)),
                    Backend::Postgres => q.bind(vector_text(vector)),
                };
                q.execute(&mut *tx).await?;
            }
            if let Some(r) = &group.record {
                records.push(r.clone());
            }
        }
        let mut settled = Vec::with_capacity(records.len());
        for chunk in records.chunks(super::MAX_BATCH) {
            settled.extend(super::ledger::settle_in(&mut tx, chunk).await?.into_iter().cloned());
        }
        for sql in [
            "DELETE FROM embed_deferrals WHERE message_id IN \
               (SELECT message_id FROM embed_queue WHERE claimed_by = $1)",
            "DELETE FROM embed_queue WHERE claimed_by = $1",
        ] {
            sqlx::query(sql).bind(instance).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(settled)
    }

    /// Gives the claimed turns back (embedding failed), for a later try.
    pub async fn release_turns(&self, instance: &str) -> StoreResult<()> {
        sqlx::query("UPDATE embed_queue SET claimed_by = NULL WHERE claimed_by = $1")
            .bind(instance)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Whether any turn not deferred past `now` waits to be embedded (all
    /// tenants).
    pub async fn has_queued_turns(&self, now: i64) -> StoreResult<bool> {
        Ok(sqlx::query(
            "SELECT q.message_id FROM embed_queue q WHERE NOT EXISTS \
               (SELECT 1 FROM embed_deferrals d \
                WHERE d.message_id = q.message_id AND d.not_before_ms > $1) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    /// The `limit` nearest turns the query reaches, by cosine similarity,
    /// best first.
    pub async fn search_vectors(
        &self,
        q: &VectorQuery<'_>,
        index: VectorIndex,
    ) -> StoreResult<Vec<HitRow>> {
        // The filter is in the same statement as the distance: an exact
        // scan of the caller's rows on SQLite; on PostgreSQL the HNSW scan
        // keeps going until `limit` rows pass the filter (pgvector's
        // iterative scans), or falls back to the exact scan when it came
        // back short, or the planner scans the owner index exactly.
        static SQLITE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        static HNSW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = match (self.backend(), index) {
            (Backend::Sqlite, _) => SQLITE
                .get_or_init(|| {
                    format!(
                        "SELECT message_id, thread_id, role, text, created_ms, \
                           1.0 - vec_distance_cosine(embedding, vec_f32($1)) AS score \
                         FROM turn_vectors WHERE {FILTER} AND embedding IS NOT NULL \
                         ORDER BY score DESC, message_id LIMIT $9"
                    )
                })
                .as_str(),
            (Backend::Postgres, VectorIndex::Hnsw | VectorIndex::HnswOrExact) => HNSW
                .get_or_init(|| {
                    format!(
                        "SELECT message_id, thread_id, role, text, created_ms, \
                           CAST(1 - (embedding_v <=> CAST($1 AS vector)) AS DOUBLE PRECISION) \
                             AS score \
                         FROM turn_vectors WHERE {FILTER} AND embedding_v IS NOT NULL \
                         ORDER BY embedding_v <=> CAST($1 AS vector) LIMIT $9"
                    )
                })
                .as_str(),
            (Backend::Postgres, VectorIndex::Exact) => pg_exact_sql(),
        };
        let vector = vector_text(q.vector);
        let query = |sql: &'static str| {
            sqlx::query_as::<_, HitRow>(sqlx::AssertSqlSafe(sql))
                .bind(vector.clone())
                .bind(q.tenant_id)
                .bind(q.owner.unwrap_or(""))
                .bind(q.key_id.unwrap_or(""))
                .bind(q.thread_id.unwrap_or(""))
                .bind(q.role.unwrap_or(""))
                .bind(q.from_ms)
                .bind(q.to_ms)
                .bind(i64::from(q.limit))
        };
        if index == VectorIndex::Exact || self.backend() == Backend::Sqlite {
            return Ok(query(sql).fetch_all(self.pool()).await?);
        }
        let mut tx = self.pool().begin().await?;
        let ef = ef_search(q.limit).to_string();
        if index == VectorIndex::Hnsw {
            // Filtered HNSW scans stop at ef_search candidates unless told
            // to go on: strict order keeps the best-first ranking exact.
            sqlx::query(
                "SELECT set_config('hnsw.iterative_scan', 'strict_order', true), \
                        set_config('hnsw.ef_search', $1, true)",
            )
            .bind(&ef)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
                .bind(&ef)
                .execute(&mut *tx)
                .await?;
        }
        let mut rows = query(sql).fetch_all(&mut *tx).await?;
        if index == VectorIndex::HnswOrExact && rows.len() < q.limit as usize {
            // The scan's candidates held too few of the caller's rows: an
            // exact scan of them never comes back short.
            rows = query(pg_exact_sql()).fetch_all(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows)
    }
}

/// What a search may reach: the caller's tenant (and key), its filters.
const FILTER: &str = "tenant_id = $2 AND ($3 = '' OR key_id = $3) \
     AND ($4 = '' OR key_id = $4) AND ($5 = '' OR thread_id = $5) \
     AND ($6 = '' OR role = $6) AND created_ms >= $7 AND created_ms < $8";

/// PostgreSQL's exact search: ordering by the score, not the distance,
/// keeps the planner off the HNSW index.
fn pg_exact_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT message_id, thread_id, role, text, created_ms, \
               CAST(1 - (embedding_v <=> CAST($1 AS vector)) AS DOUBLE PRECISION) AS score \
             FROM turn_vectors WHERE {FILTER} AND embedding_v IS NOT NULL \
             ORDER BY score DESC, message_id LIMIT $9"
        )
    })
}

/// Puts one claimed turn back in the queue, unclaimed.
async fn release_claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    instance: &str,
    message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE embed_queue SET claimed_by = NULL WHERE message_id = $1 AND claimed_by = $2",
    )
    .bind(message_id)
    .bind(instance)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
