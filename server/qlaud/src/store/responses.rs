//! Stored Responses API responses: the object the client got, and where
//! its conversation lives (a thread, up to a seq). Reads that serve a
//! standard key name the owner key, so another key's response reads as
//! missing.

use sqlx::FromRow;

use super::{Store, StoreResult, ThreadAccess, now_ms};
use crate::error::Error;

macro_rules! response_columns {
    () => {
        "id, tenant_id, key_id, thread_id, last_seq, in_conversation, body, created_ms"
    };
}

/// A response to store.
#[derive(Clone, Debug)]
pub struct NewResponse {
    /// The `resp_…` id the client saw.
    pub id: String,
    pub tenant_id: String,
    /// The key that made it.
    pub key_id: String,
    pub thread_id: String,
    /// The seq of its last message in the thread.
    pub last_seq: i64,
    /// Made with `conversation`.
    pub in_conversation: bool,
    /// The response object as returned.
    pub body: String,
}

/// A response as stored.
#[derive(Clone, Debug, FromRow)]
pub struct ResponseRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub thread_id: String,
    pub last_seq: i64,
    pub in_conversation: i64,
    pub body: String,
    pub created_ms: i64,
}

impl Store {
    pub async fn insert_response(&self, new: &NewResponse) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO responses (id, tenant_id, key_id, thread_id, last_seq, \
             in_conversation, body, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.id)
        .bind(&new.tenant_id)
        .bind(&new.key_id)
        .bind(&new.thread_id)
        .bind(new.last_seq)
        .bind(i64::from(new.in_conversation))
        .bind(&new.body)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The response, if the caller reaches it; otherwise `NotFound`, the
    /// same for another key's, another tenant's and a missing response.
    pub async fn get_response(
        &self,
        access: ThreadAccess<'_>,
        response_id: &str,
    ) -> StoreResult<ResponseRow> {
        const SQL: &str = concat!(
            "SELECT ",
            response_columns!(),
            " FROM responses WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3)"
        );
        sqlx::query_as::<_, ResponseRow>(SQL)
            .bind(access.tenant_id)
            .bind(response_id)
            .bind(access.owner.unwrap_or(""))
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("response", response_id))
    }

    /// Deletes the response. Outside a conversation its messages go too
    /// (they were kept only for it and the responses chained from it);
    /// inside one they are the conversation's items and stay.
    pub async fn delete_response(
        &self,
        access: ThreadAccess<'_>,
        response_id: &str,
    ) -> StoreResult<()> {
        let row = self.get_response(access, response_id).await?;
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM responses WHERE id = $1").bind(&row.id).execute(&mut *tx).await?;
        if row.in_conversation == 0 {
            sqlx::query("DELETE FROM thread_messages WHERE thread_id = $1 AND response_id = $2")
                .bind(&row.thread_id)
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
