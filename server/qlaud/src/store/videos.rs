//! Videos whose reservation is held until their outcome is seen (see
//! migration 0014). Reads name the tenant and, for a standard key, the
//! owner key, so another key's video reads as missing.

use sqlx::Row;

use super::{Store, StoreResult};

/// The instance name a held reservation is moved to: no process
/// heartbeats it, and crash recovery leaves it to the video's poll.
pub const HELD: &str = "video";

/// A video as stored.
#[derive(Clone, Debug)]
pub struct VideoRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub reservation_id: String,
    pub period_start_ms: i64,
    pub reserved_micros: i64,
    pub unit: String,
    pub seconds: i64,
    pub status: String,
    pub settled_ms: Option<i64>,
    pub created_ms: i64,
}

impl Store {
    /// Records an accepted video and moves its reservation out of its
    /// process's reach, in one transaction.
    pub async fn insert_video(&self, v: &VideoRow) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO videos (id, tenant_id, key_id, model, provider, reservation_id, \
             period_start_ms, reserved_micros, unit, seconds, status, settled_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12)",
        )
        .bind(&v.id)
        .bind(&v.tenant_id)
        .bind(&v.key_id)
        .bind(&v.model)
        .bind(&v.provider)
        .bind(&v.reservation_id)
        .bind(v.period_start_ms)
        .bind(v.reserved_micros)
        .bind(&v.unit)
        .bind(v.seconds)
        .bind(&v.status)
        .bind(v.created_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE reservations SET instance_id = $1 WHERE id = $2")
            .bind(HELD)
            .bind(&v.reservation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The video `id` if the caller reaches it (`owner: None` is the
    /// whole tenant).
    pub async fn get_video(
        &self,
        tenant_id: &str,
        owner: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<VideoRow>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, key_id, model, provider, reservation_id, period_start_ms, \
             reserved_micros, unit, seconds, status, settled_ms, created_ms FROM videos \
             WHERE id = $1 AND tenant_id = $2 AND ($3 = '' OR key_id = $3)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(video_row).transpose()
    }

    /// Videos still waiting for their outcome that were created before
    /// `created_before_ms`, oldest first: the ones no client polled to the
    /// end, which the server polls itself.
    pub async fn unsettled_videos(
        &self,
        created_before_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<VideoRow>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, key_id, model, provider, reservation_id, period_start_ms, \
             reserved_micros, unit, seconds, status, settled_ms, created_ms FROM videos \
             WHERE settled_ms IS NULL AND created_ms < $1 ORDER BY created_ms LIMIT $2",
        )
        .bind(created_before_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(video_row).collect()
    }

    /// Marks the video's outcome; true for the one caller that did it
    /// (that caller settles the reservation, so it is settled once).
    pub async fn finish_video(&self, id: &str, status: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE videos SET status = $1, settled_ms = $2 WHERE id = $3 AND settled_ms IS NULL",
        )
        .bind(status)
        .bind(now_ms)
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn video_row(r: &sqlx::any::AnyRow) -> StoreResult<VideoRow> {
    Ok(VideoRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        key_id: r.try_get("key_id")?,
        model: r.try_get("model")?,
        provider: r.try_get("provider")?,
        reservation_id: r.try_get("reservation_id")?,
        period_start_ms: r.try_get("period_start_ms")?,
        reserved_micros: r.try_get("reserved_micros")?,
        unit: r.try_get("unit")?,
        seconds: r.try_get("seconds")?,
        status: r.try_get("status")?,
        settled_ms: r.try_get("settled_ms")?,
        created_ms: r.try_get("created_ms")?,
    })
}
