//! Threads, their messages and turn idempotency, as stored. Every query
//! names the tenant, and reads that serve a standard key also name the
//! owner key, so a thread outside the caller's reach reads as missing.

use std::collections::BTreeMap;

use qlaud_api::{MessageRole, MessagesUsage, SortDirection, Truncation};
use serde_json::Value;
use sqlx::{FromRow, Row};

use super::{Store, StoreResult, new_id, now_ms};
use crate::error::Error;

macro_rules! thread_columns {
    () => {
        "id, tenant_id, key_id, metadata, system_prompt, model, truncation, last_seq, \
         created_ms, updated_ms"
    };
}

macro_rules! message_columns {
    () => {
        "id, thread_id, tenant_id, seq, role, content, model, stop_reason, usage, request_id, \
         metadata, created_ms, response_id"
    };
}

/// Which threads a caller reaches: a tenant's, and for a standard key only
/// those it owns.
#[derive(Clone, Copy, Debug)]
pub struct ThreadAccess<'a> {
    pub tenant_id: &'a str,
    /// `Some(key)` limits to that key's threads; `None` is the whole tenant.
    pub owner: Option<&'a str>,
}

/// A thread to insert.
#[derive(Clone, Debug)]
pub struct NewThread {
    pub tenant_id: String,
    /// The owner key.
    pub key_id: String,
    pub metadata: BTreeMap<String, String>,
    pub system: Option<String>,
    pub model: Option<String>,
    pub truncation: Truncation,
}

/// A thread as stored.
#[derive(Clone, Debug, FromRow)]
pub struct ThreadRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub metadata: String,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    pub truncation: String,
    /// The seq of the newest message (0 when there is none).
    pub last_seq: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Changes to a thread; `None` leaves a column as it is, `Some(None)`
/// clears a nullable one.
#[derive(Clone, Debug, Default)]
pub struct ThreadChanges {
    pub metadata: Option<BTreeMap<String, String>>,
    pub system: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub truncation: Option<Truncation>,
}

/// Which threads to list: newest or oldest first, between two exclusive
/// bounds `(created_ms, id)`.
#[derive(Clone, Debug)]
pub struct ThreadQuery<'a> {
    pub access: ThreadAccess<'a>,
    /// Only this key's threads (an admin's filter).
    pub key_id: Option<&'a str>,
    pub order: SortDirection,
    pub after: Option<(i64, &'a str)>,
    pub before: Option<(i64, &'a str)>,
    pub limit: u32,
}

/// A message to append.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The id to store it under (`msg_…`): known before it is stored, so a
    /// streamed turn can name its messages as they are written.
    pub id: String,
    pub role: MessageRole,
    /// Anthropic content blocks.
    pub content: Vec<Value>,
    pub model: Option<String>,
    pub stop_reason: Option<String>,
    pub usage: Option<MessagesUsage>,
    /// The metered request that produced it (the ledger's request id).
    pub request_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The Responses API response (`resp_…`) whose input or output it is.
    pub response_id: Option<String>,
}

/// A message as stored; JSON columns are text.
#[derive(Clone, Debug, FromRow)]
pub struct MessageRow {
    pub id: String,
    pub thread_id: String,
    pub tenant_id: String,
    /// Position in the thread: 1, 2, … in the order of appending.
    pub seq: i64,
    pub role: String,
    pub content: String,
    pub model: Option<String>,
    pub stop_reason: Option<String>,
    pub usage: Option<String>,
    pub request_id: Option<String>,
    pub metadata: String,
    pub created_ms: i64,
    pub response_id: Option<String>,
}

/// Which of a thread's messages to list, between two exclusive seqs.
#[derive(Clone, Debug)]
pub struct MessageQuery<'a> {
    pub tenant_id: &'a str,
    pub thread_id: &'a str,
    pub order: SortDirection,
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// What claiming an idempotency key of a turn found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnClaim {
    /// The caller runs the turn, then completes (or releases) the claim.
    Claimed,
    /// The turn already ran: this is its answer's message id.
    Done(String),
    /// Another request with the same key is running the turn now.
    InProgress,
    /// The key was first used for a different request (another
    /// fingerprint).
    Mismatch,
}

pub fn truncation_str(t: Truncation) -> &'static str {
    match t {
        Truncation::Disabled => "disabled",
        Truncation::Auto => "auto",
    }
}

/// A stored truncation; `None` for a spelling qlaud never writes.
pub fn parse_truncation(s: &str) -> Option<Truncation> {
    [Truncation::Disabled, Truncation::Auto].into_iter().find(|t| truncation_str(*t) == s)
}

pub fn role_str(role: MessageRole) -> &'static str {
    match role {
        MessageRole::User => "user",
        MessageRole::Assistant => "assistant",
    }
}

/// A stored role; `None` for a spelling qlaud never writes.
pub fn parse_role(s: &str) -> Option<MessageRole> {
    [MessageRole::User, MessageRole::Assistant].into_iter().find(|r| role_str(*r) == s)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

// `($n = '' OR …)` binds: an absent filter or bound is the empty string.
fn owner(access: ThreadAccess<'_>) -> &str {
    access.owner.unwrap_or("")
}

impl Store {
    pub async fn insert_thread(&self, new: &NewThread) -> StoreResult<ThreadRow> {
        let now = now_ms();
        const SQL: &str = concat!(
            "INSERT INTO threads (id, tenant_id, key_id, metadata, system_prompt, model, \
             truncation, last_seq, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) RETURNING ",
            thread_columns!(),
            ""
        );
        Ok(sqlx::query_as::<_, ThreadRow>(SQL)
            .bind(new_id("thr"))
            .bind(&new.tenant_id)
            .bind(&new.key_id)
            .bind(json(&new.metadata))
            .bind(new.system.as_deref())
            .bind(new.model.as_deref())
            .bind(truncation_str(new.truncation))
            .bind(now)
            .fetch_one(self.writer())
            .await?)
    }

    /// The thread, if the caller reaches it; otherwise `NotFound`, the same
    /// for another key's, another tenant's and a missing thread.
    pub async fn get_thread(
        &self,
        access: ThreadAccess<'_>,
        thread_id: &str,
    ) -> StoreResult<ThreadRow> {
        const SQL: &str = concat!(
            "SELECT ",
            thread_columns!(),
            " FROM threads WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3)"
        );
        sqlx::query_as::<_, ThreadRow>(SQL)
            .bind(access.tenant_id)
            .bind(thread_id)
            .bind(owner(access))
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("thread", thread_id))
    }

    pub async fn list_threads(&self, q: &ThreadQuery<'_>) -> StoreResult<Vec<ThreadRow>> {
        // sqlx takes static SQL only: one text per direction.
        macro_rules! list_sql {
            ($dir:literal) => {
                concat!(
                    "SELECT ",
                    thread_columns!(),
                    " FROM threads WHERE tenant_id = $1 AND ($2 = '' OR key_id = $2) \
                       AND ($3 = '' OR key_id = $3) \
                       AND ($5 = '' OR created_ms > $4 OR (created_ms = $4 AND id > $5)) \
                       AND ($7 = '' OR created_ms < $6 OR (created_ms = $6 AND id < $7)) \
                     ORDER BY created_ms ",
                    $dir,
                    ", id ",
                    $dir,
                    " LIMIT $8"
                )
            };
        }
        let sql = match q.order {
            SortDirection::Asc => list_sql!("ASC"),
            SortDirection::Desc => list_sql!("DESC"),
        };
        let (after_ms, after_id) = q.after.unwrap_or((0, ""));
        let (before_ms, before_id) = q.before.unwrap_or((0, ""));
        Ok(sqlx::query_as::<_, ThreadRow>(sql)
            .bind(q.access.tenant_id)
            .bind(owner(q.access))
            .bind(q.key_id.unwrap_or(""))
            .bind(after_ms)
            .bind(after_id)
            .bind(before_ms)
            .bind(before_id)
            .bind(i64::from(q.limit))
            .fetch_all(self.pool())
            .await?)
    }

    /// Applies `changes` in one statement, so concurrent updates of
    /// different fields never undo each other.
    pub async fn update_thread(
        &self,
        access: ThreadAccess<'_>,
        thread_id: &str,
        changes: &ThreadChanges,
    ) -> StoreResult<ThreadRow> {
        const SQL: &str = concat!(
            "UPDATE threads SET \
               metadata = COALESCE($4, metadata), \
               system_prompt = CASE WHEN $5 = 1 THEN $6 ELSE system_prompt END, \
               model = CASE WHEN $7 = 1 THEN $8 ELSE model END, \
               truncation = COALESCE($9, truncation), \
               updated_ms = $10 \
             WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3) \
             RETURNING ",
            thread_columns!(),
            ""
        );
        sqlx::query_as::<_, ThreadRow>(SQL)
            .bind(access.tenant_id)
            .bind(thread_id)
            .bind(owner(access))
            .bind(changes.metadata.as_ref().map(json))
            .bind(i64::from(changes.system.is_some()))
            .bind(changes.system.clone().flatten())
            .bind(i64::from(changes.model.is_some()))
            .bind(changes.model.clone().flatten())
            .bind(changes.truncation.map(truncation_str))
            .bind(now_ms())
            .fetch_optional(self.writer())
            .await?
            .ok_or_else(|| Error::not_found("thread", thread_id))
    }

    /// Deletes the thread, its messages, its turn records and the stored
    /// responses it holds, in one transaction.
    pub async fn delete_thread(
        &self,
        access: ThreadAccess<'_>,
        thread_id: &str,
    ) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        // Touching the row first locks it (PostgreSQL), so an append running
        // now either commits before the deletes below or finds no thread.
        let found = sqlx::query(
            "UPDATE threads SET updated_ms = updated_ms \
             WHERE tenant_id = $1 AND id = $2 AND ($3 = '' OR key_id = $3)",
        )
        .bind(access.tenant_id)
        .bind(thread_id)
        .bind(owner(access))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found == 0 {
            tx.rollback().await?;
            return Err(Error::not_found("thread", thread_id));
        }
        for sql in [
            "DELETE FROM responses WHERE thread_id = $1",
            "DELETE FROM thread_turns WHERE thread_id = $1",
            "DELETE FROM thread_messages WHERE thread_id = $1",
            "DELETE FROM threads WHERE id = $1",
        ] {
            sqlx::query(sql).bind(thread_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends `messages` to the thread in one transaction, at the next
    /// seqs in the order given, and returns them as stored. With `turn`
    /// (an idempotency key claimed with [`Store::claim_turn`]), the same
    /// transaction completes that turn with the last message as its answer,
    /// so a crash never leaves the messages stored but the turn unanswered.
    /// The caller checks access first; a thread deleted since is `NotFound`.
    pub async fn append_messages(
        &self,
        tenant_id: &str,
        thread_id: &str,
        messages: &[NewMessage],
        turn: Option<&str>,
    ) -> StoreResult<Vec<MessageRow>> {
        let Some(n) = i64::try_from(messages.len()).ok().filter(|n| *n > 0) else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        // Reserving the seqs locks the thread row until commit: concurrent
        // appends to one thread queue here and never share a seq.
        let last: Option<i64> = sqlx::query(
            "UPDATE threads SET last_seq = last_seq + $3, updated_ms = $4 \
             WHERE tenant_id = $1 AND id = $2 RETURNING last_seq",
        )
        .bind(tenant_id)
        .bind(thread_id)
        .bind(n)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("last_seq"))
        .transpose()?;
        let Some(last) = last else {
            tx.rollback().await?;
            return Err(Error::not_found("thread", thread_id));
        };
        const SQL: &str = concat!(
            "INSERT INTO thread_messages (",
            message_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING ",
            message_columns!(),
            ""
        );
        let mut stored = Vec::with_capacity(messages.len());
        for (seq, m) in (last - n + 1..).zip(messages) {
            let row = sqlx::query_as::<_, MessageRow>(SQL)
                .bind(&m.id)
                .bind(thread_id)
                .bind(tenant_id)
                .bind(seq)
                .bind(role_str(m.role))
                .bind(json(&m.content))
                .bind(m.model.as_deref())
                .bind(m.stop_reason.as_deref())
                .bind(m.usage.as_ref().map(json))
                .bind(m.request_id.as_deref())
                .bind(json(&m.metadata))
                .bind(now)
                .bind(m.response_id.as_deref())
                .fetch_one(&mut *tx)
                .await?;
            stored.push(row);
        }
        // Queued for search in the same transaction: a stored turn is never
        // left unindexed, whatever crashes next.
        for m in &stored {
            sqlx::query("INSERT INTO embed_queue (message_id, enqueued_ms) VALUES ($1, $2)")
                .bind(&m.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if let (Some(key), Some(answer)) = (turn, stored.last()) {
            complete_turn(&mut tx, thread_id, key, &answer.id).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// A page of the thread's messages. The caller checks access first.
    pub async fn list_messages(&self, q: &MessageQuery<'_>) -> StoreResult<Vec<MessageRow>> {
        macro_rules! list_sql {
            ($dir:literal) => {
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 \
                       AND seq > $3 AND seq < $4 ORDER BY seq ",
                    $dir,
                    " LIMIT $5"
                )
            };
        }
        let sql = match q.order {
            SortDirection::Asc => list_sql!("ASC"),
            SortDirection::Desc => list_sql!("DESC"),
        };
        Ok(sqlx::query_as::<_, MessageRow>(sql)
            .bind(q.tenant_id)
            .bind(q.thread_id)
            .bind(q.after_seq.unwrap_or(0))
            .bind(q.before_seq.unwrap_or(i64::MAX))
            .bind(i64::from(q.limit))
            .fetch_all(self.pool())
            .await?)
    }

    /// One message of the thread, or `NotFound`.
    pub async fn get_message(
        &self,
        tenant_id: &str,
        thread_id: &str,
        message_id: &str,
    ) -> StoreResult<MessageRow> {
        const SQL: &str = concat!(
            "SELECT ",
            message_columns!(),
            " FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 AND id = $3"
        );
        sqlx::query_as::<_, MessageRow>(SQL)
            .bind(tenant_id)
            .bind(thread_id)
            .bind(message_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("message", message_id))
    }

    /// The whole history of the thread, oldest first (for a turn).
    pub async fn thread_history(
        &self,
        tenant_id: &str,
        thread_id: &str,
    ) -> StoreResult<Vec<MessageRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            message_columns!(),
            " FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 ORDER BY seq"
        );
        Ok(sqlx::query_as::<_, MessageRow>(SQL)
            .bind(tenant_id)
            .bind(thread_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// The thread's history up to and including seq `last_seq`, oldest
    /// first (for a response chained from one that ended there).
    pub async fn thread_history_until(
        &self,
        tenant_id: &str,
        thread_id: &str,
        last_seq: i64,
    ) -> StoreResult<Vec<MessageRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            message_columns!(),
            " FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 AND seq <= $3 \
             ORDER BY seq"
        );
        Ok(sqlx::query_as::<_, MessageRow>(SQL)
            .bind(tenant_id)
            .bind(thread_id)
            .bind(last_seq)
            .fetch_all(self.pool())
            .await?)
    }

    /// Deletes one message of the thread, or answers `NotFound`. The caller
    /// checks access first.
    pub async fn delete_message(
        &self,
        tenant_id: &str,
        thread_id: &str,
        message_id: &str,
    ) -> StoreResult<()> {
        let deleted = sqlx::query(
            "DELETE FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(thread_id)
        .bind(message_id)
        .execute(self.writer())
        .await?
        .rows_affected();
        if deleted == 0 {
            return Err(Error::not_found("item", message_id));
        }
        sqlx::query("UPDATE threads SET updated_ms = $2 WHERE id = $1")
            .bind(thread_id)
            .bind(now_ms())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Claims an idempotency key of a turn on the thread. Exactly one of
    /// concurrent claims of one key gets `Claimed`; the others see
    /// `InProgress` until it completes (then `Done`). `fingerprint`
    /// identifies the request (such as a hash of its body). The caller
    /// checks access first; a missing thread is `NotFound`.
    pub async fn claim_turn(
        &self,
        tenant_id: &str,
        thread_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> StoreResult<TurnClaim> {
        // The SELECT inserts nothing when the thread is gone; its WHERE also
        // settles SQLite's parse of `INSERT … SELECT … ON CONFLICT`.
        let inserted = sqlx::query(
            "INSERT INTO thread_turns (thread_id, idempotency_key, fingerprint, claimed_ms) \
             SELECT id, $3, $4, $5 FROM threads WHERE tenant_id = $1 AND id = $2 \
             ON CONFLICT (thread_id, idempotency_key) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(thread_id)
        .bind(key)
        .bind(fingerprint)
        .bind(now_ms())
        .execute(self.writer())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(TurnClaim::Claimed);
        }
        let row = sqlx::query(
            "SELECT fingerprint, message_id FROM thread_turns \
             WHERE thread_id = $1 AND idempotency_key = $2",
        )
        .bind(thread_id)
        .bind(key)
        .fetch_optional(self.writer())
        .await?
        .ok_or_else(|| Error::not_found("thread", thread_id))?;
        if row.try_get::<String, _>("fingerprint")? != fingerprint {
            return Ok(TurnClaim::Mismatch);
        }
        Ok(match row.try_get::<Option<String>, _>("message_id")? {
            Some(id) => TurnClaim::Done(id),
            None => TurnClaim::InProgress,
        })
    }

    /// Records `message_id` as the answer of a claimed turn.
    pub async fn complete_turn(
        &self,
        thread_id: &str,
        key: &str,
        message_id: &str,
    ) -> StoreResult<()> {
        let mut conn = self.writer().acquire().await?;
        complete_turn(&mut conn, thread_id, key, message_id).await
    }

    /// Gives up a claimed turn that failed before storing an answer, so a
    /// retry with the same key runs it again. A completed turn stays.
    pub async fn release_turn(&self, thread_id: &str, key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM thread_turns \
             WHERE thread_id = $1 AND idempotency_key = $2 AND message_id IS NULL",
        )
        .bind(thread_id)
        .bind(key)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}

async fn complete_turn(
    conn: &mut sqlx::AnyConnection,
    thread_id: &str,
    key: &str,
    message_id: &str,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE thread_turns SET message_id = $3, completed_ms = $4 \
         WHERE thread_id = $1 AND idempotency_key = $2 AND message_id IS NULL",
    )
    .bind(thread_id)
    .bind(key)
    .bind(message_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if done == 1 {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "turn {key:?} of thread {thread_id} is not claimed or already completed"
        )))
    }
}
