//! Console sessions. The cookie's token is kept only as a hash; a session
//! counts only while it is unexpired, not signed out, and its admin key is
//! still live, all decided in the one lookup.

use sqlx::FromRow;

use super::{Store, StoreResult};

/// A live session and the key behind it.
#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    pub tenant_id: String,
    pub key_id: String,
    pub key_name: String,
    pub scope: String,
    pub period: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl Store {
    pub async fn create_session(
        &self,
        token_hash: &str,
        tenant_id: &str,
        key_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, tenant_id, key_id, created_ms, \
             expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(tenant_id)
        .bind(key_id)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The session of a token hash, if it may still be used at `now_ms`.
    pub async fn find_session(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<SessionRow>> {
        Ok(sqlx::query_as::<_, SessionRow>(
            "SELECT s.tenant_id, s.key_id, k.name AS key_name, k.scope, k.period, \
               s.created_ms, s.expires_ms \
             FROM dashboard_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.token_hash = $1 AND s.revoked_ms IS NULL AND s.expires_ms > $2 \
               AND k.revoked_ms IS NULL AND k.disabled = 0 AND k.scope = 'admin'",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Signs a session out; true if it was live.
    pub async fn revoke_session(&self, token_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE dashboard_sessions SET revoked_ms = $2 \
             WHERE token_hash = $1 AND revoked_ms IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(self.writer())
        .await?
        .rows_affected();
        // Expired sessions are of no use to anyone; clear them now and then.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_ms < $1")
            .bind(now_ms - 86_400_000)
            .execute(self.writer())
            .await?;
        Ok(done == 1)
    }
}
