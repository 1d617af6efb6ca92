//! The search index as stored: the queue of turns waiting to be embedded
//! and their vectors. Every search names the tenant (and, for a standard
//! key, the owner key) inside the index query itself, so no parameter can
//! reach another tenant's rows and `limit` counts only rows the caller may
//! see.

use sqlx::{FromRow, Row};

use super::{Backend, Store, StoreResult};

/// How a store answers a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorIndex {
    /// Cosine distance over every row the caller may see: SQLite
    /// (sqlite-vec), and PostgreSQL with a pgvector older than 0.8, whose
    /// HNSW scans cannot go on past a filter and would come back short.
    Exact,
    /// pgvector's HNSW index with iterative scans (0.8 and later).
    Hnsw,
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
            "CREATE INDEX IF NOT EXISTS turn_vectors_hnsw ON turn_vectors \
             USING hnsw (embedding_v vector_cosine_ops)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        let version: String =
            sqlx::query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                .fetch_one(&mut *tx)
                .await?
                .try_get("extversion")?;
        tx.commit().await?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Ok(Some(if (major, minor) >= (0, 8) {
            VectorIndex::Hnsw
        } else {
            tracing::warn!(
                version,
                "pgvector older than 0.8 cannot continue a filtered HNSW scan: searches scan \
                 the caller's rows exactly (upgrade pgvector for the index)"
            );
            VectorIndex::Exact
        }))
    }

    /// Claims up to `limit` queued turns for `instance`: those nobody
    /// holds, and those held by a process whose heartbeat is older than
    /// `alive_since` (it died mid-batch). Returns them with what their
    /// vectors are stored under; turns whose message is gone cascade away.
    pub async fn claim_turns(
        &self,
        instance: &str,
        alive_since: i64,
        limit: u32,
    ) -> StoreResult<Vec<PendingTurn>> {
        macro_rules! claim_sql {
            ($lock:literal) => {
                concat!(
                    "UPDATE embed_queue SET claimed_by = $1, attempts = attempts + 1 \
                     WHERE message_id IN (SELECT message_id FROM embed_queue \
                       WHERE claimed_by IS NULL OR claimed_by NOT IN \
                         (SELECT id FROM instances WHERE heartbeat_ms >= $2) \
                       ORDER BY enqueued_ms, message_id LIMIT $3",
                    $lock,
                    ")"
                )
            };
        }
        let sql = match self.backend() {
            Backend::Postgres => claim_sql!(" FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => claim_sql!(""),
        };
        let claimed = sqlx::query(sql)
            .bind(instance)
            .bind(alive_since)
            .bind(i64::from(limit))
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
             WHERE q.claimed_by = $1",
        )
        .bind(instance)
        .fetch_all(self.writer())
        .await?)
    }

    /// Stores the claimed turns' vectors and takes them off the queue, in
    /// one transaction. A vector already stored (another process embedded
    /// the turn after this one's claim went stale) stays as it was.
    pub async fn store_vectors(
        &self,
        instance: &str,
        vectors: &[NewVector<'_>],
    ) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        let sql = match self.backend() {
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
        for v in vectors {
            let Some(vector) = &v.vector else { continue };
            let t = v.turn;
            let q = sqlx::query(sql)
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
        sqlx::query("DELETE FROM embed_queue WHERE claimed_by = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives the claimed turns back (embedding failed), for a later try.
    pub async fn release_turns(&self, instance: &str) -> StoreResult<()> {
        sqlx::query("UPDATE embed_queue SET claimed_by = NULL WHERE claimed_by = $1")
            .bind(instance)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Whether any turn waits to be embedded (all tenants).
    pub async fn has_queued_turns(&self) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT message_id FROM embed_queue LIMIT 1")
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
        // iterative scans), or the planner scans the owner index exactly.
        const FILTER: &str = "tenant_id = $2 AND ($3 = '' OR key_id = $3) \
             AND ($4 = '' OR key_id = $4) AND ($5 = '' OR thread_id = $5) \
             AND ($6 = '' OR role = $6) AND created_ms >= $7 AND created_ms < $8";
        let (sql, vector) = match (self.backend(), index) {
            (Backend::Sqlite, _) => {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!(
                        "SELECT message_id, thread_id, role, text, created_ms, \
                           1.0 - vec_distance_cosine(embedding, vec_f32($1)) AS score \
                         FROM turn_vectors WHERE {FILTER} AND embedding IS NOT NULL \
                         ORDER BY score DESC, message_id LIMIT $9"
                    )
                });
                (sql.as_str(), vector_text(q.vector))
            }
            (Backend::Postgres, VectorIndex::Hnsw) => {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!(
                        "SELECT message_id, thread_id, role, text, created_ms, \
                           CAST(1 - (embedding_v <=> CAST($1 AS vector)) AS DOUBLE PRECISION) \
                             AS score \
                         FROM turn_vectors WHERE {FILTER} AND embedding_v IS NOT NULL \
                         ORDER BY embedding_v <=> CAST($1 AS vector) LIMIT $9"
                    )
                });
                (sql.as_str(), vector_text(q.vector))
            }
            // Ordering by the score, not the distance, keeps the planner
            // off the HNSW index.
            (Backend::Postgres, VectorIndex::Exact) => {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!(
                        "SELECT message_id, thread_id, role, text, created_ms, \
                           CAST(1 - (embedding_v <=> CAST($1 AS vector)) AS DOUBLE PRECISION) \
                             AS score \
                         FROM turn_vectors WHERE {FILTER} AND embedding_v IS NOT NULL \
                         ORDER BY score DESC, message_id LIMIT $9"
                    )
                });
                (sql.as_str(), vector_text(q.vector))
            }
        };
        let query = sqlx::query_as::<_, HitRow>(sqlx::AssertSqlSafe(sql))
            .bind(vector)
            .bind(q.tenant_id)
            .bind(q.owner.unwrap_or(""))
            .bind(q.key_id.unwrap_or(""))
            .bind(q.thread_id.unwrap_or(""))
            .bind(q.role.unwrap_or(""))
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(i64::from(q.limit));
        if index == VectorIndex::Hnsw {
            let mut tx = self.pool().begin().await?;
            // Filtered HNSW scans stop at ef_search candidates unless told
            // to go on: strict order keeps the best-first ranking exact.
            sqlx::query(
                "SELECT set_config('hnsw.iterative_scan', 'strict_order', true), \
                        set_config('hnsw.ef_search', '100', true)",
            )
            .execute(&mut *tx)
            .await?;
            let rows = query.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            return Ok(rows);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }
}
