//! Deleting an end user's data (a key's), for deletion requests: threads
//! with their messages, stored responses, turn records and search vectors;
//! jobs with their results. Usage rows and the request log stay: they hold
//! counts and costs, not content, and billing needs them.

use qlaud_api::KeyDataDeleted;
use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    /// Deletes `key_id`'s data in one transaction. `NotFound` when the key
    /// is not the tenant's.
    pub async fn delete_key_data(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> StoreResult<KeyDataDeleted> {
        self.get_key(tenant_id, key_id).await?;
        let mut tx = self.writer().begin().await?;
        let messages: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM thread_messages WHERE thread_id IN \
               (SELECT id FROM threads WHERE tenant_id = $1 AND key_id = $2)",
        )
        .bind(tenant_id)
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        // Children first: the vectors and queue rows go with their messages
        // (ON DELETE CASCADE), stated here too so the order never depends
        // on a backend's cascade.
        for sql in [
            "DELETE FROM turn_vectors WHERE message_id IN (SELECT m.id FROM thread_messages m \
               JOIN threads t ON t.id = m.thread_id WHERE t.tenant_id = $1 AND t.key_id = $2)",
            "DELETE FROM embed_queue WHERE message_id IN (SELECT m.id FROM thread_messages m \
               JOIN threads t ON t.id = m.thread_id WHERE t.tenant_id = $1 AND t.key_id = $2)",
            "DELETE FROM embed_deferrals WHERE message_id IN (SELECT m.id FROM thread_messages m \
               JOIN threads t ON t.id = m.thread_id WHERE t.tenant_id = $1 AND t.key_id = $2)",
            "DELETE FROM responses WHERE tenant_id = $1 AND (key_id = $2 OR thread_id IN \
               (SELECT id FROM threads WHERE tenant_id = $1 AND key_id = $2))",
            "DELETE FROM thread_turns WHERE thread_id IN \
               (SELECT id FROM threads WHERE tenant_id = $1 AND key_id = $2)",
            "DELETE FROM thread_messages WHERE thread_id IN \
               (SELECT id FROM threads WHERE tenant_id = $1 AND key_id = $2)",
        ] {
            sqlx::query(sql).bind(tenant_id).bind(key_id).execute(&mut *tx).await?;
        }
        let threads = sqlx::query("DELETE FROM threads WHERE tenant_id = $1 AND key_id = $2")
            .bind(tenant_id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A job running now finishes (its call may be billed) and is
        // cancelled from here; every other job goes with its result.
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1 \
             WHERE tenant_id = $1 AND key_id = $2 AND status = 'in_progress'",
        )
        .bind(tenant_id)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        // A queued job's hold on the budget goes with it: it was never sent.
        let holds: Vec<String> = sqlx::query(
            "SELECT reservation_id FROM jobs WHERE tenant_id = $1 AND key_id = $2 \
             AND status = 'queued' AND reservation_id IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(key_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("reservation_id"))
        .collect::<Result<_, _>>()?;
        for id in holds {
            super::ledger::release_in(&mut tx, &id).await?;
        }
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE tenant_id = $1 AND key_id = $2 AND status <> 'in_progress'",
        )
        .bind(tenant_id)
        .bind(key_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(KeyDataDeleted {
            key_id: key_id.to_string(),
            threads,
            messages: u64::try_from(messages).unwrap_or(0),
            jobs,
        })
    }
}
