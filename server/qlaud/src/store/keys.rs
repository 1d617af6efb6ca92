//! Keys as stored. Every query names the tenant, so one tenant's request can
//! never read or change another tenant's key.

use std::collections::BTreeMap;

use qlaud_api::{KeyScope, Period};
use sqlx::{AnyExecutor, FromRow};

use super::{Store, StoreResult, new_id, now_ms};
use crate::error::Error;
use crate::keys::secret::Secret;

// A macro, not a const, so queries stay `&'static str` (sqlx refuses
// dynamic SQL) while naming the columns once.
macro_rules! key_columns {
    () => {
        "id, tenant_id, name, scope, secret_hint, max_spend_micros, period, metadata, disabled, \
         created_ms, updated_ms, rotated_ms, revoked_ms, suspended_ms, max_requests_per_minute, \
         max_tokens_per_minute"
    };
}

/// A key as stored (without its secret hash).
#[derive(Clone, Debug, FromRow)]
pub struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scope: String,
    pub secret_hint: String,
    pub max_spend_micros: Option<i64>,
    pub period: String,
    pub metadata: String,
    pub disabled: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub rotated_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub suspended_ms: Option<i64>,
    pub max_requests_per_minute: Option<i64>,
    pub max_tokens_per_minute: Option<i64>,
}

/// What the authenticator needs to know about a presented secret.
#[derive(Clone, Debug, FromRow)]
pub struct AuthRow {
    pub id: String,
    pub tenant_id: String,
    pub scope: String,
    pub period: String,
    pub secret_hash: String,
    pub disabled: i64,
    pub revoked_ms: Option<i64>,
}

/// A key to insert.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub tenant_id: String,
    pub name: String,
    pub scope: KeyScope,
    pub max_spend_micros: Option<i64>,
    pub period: Period,
    pub metadata: BTreeMap<String, String>,
    pub max_requests_per_minute: Option<i64>,
    pub max_tokens_per_minute: Option<i64>,
}

/// Changes to a key; `None` leaves a column as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyChanges {
    pub name: Option<String>,
    /// `Some(None)` removes the cap.
    pub max_spend_micros: Option<Option<i64>>,
    pub period: Option<Period>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the limit (the tenant's default applies again).
    pub max_requests_per_minute: Option<Option<i64>>,
    pub max_tokens_per_minute: Option<Option<i64>>,
}

/// The metadata entry that links a key to a Stripe customer.
pub const STRIPE_CUSTOMER: &str = "stripe_customer_id";

pub fn scope_str(scope: KeyScope) -> &'static str {
    match scope {
        KeyScope::Admin => "admin",
        KeyScope::Standard => "standard",
    }
}

/// A stored scope; `None` for a spelling qlaud never writes.
pub fn parse_scope(s: &str) -> Option<KeyScope> {
    [KeyScope::Admin, KeyScope::Standard].into_iter().find(|k| scope_str(*k) == s)
}

/// A stored period; `None` for a spelling qlaud never writes.
pub fn parse_period(s: &str) -> Option<Period> {
    [Period::Monthly, Period::Weekly, Period::Daily, Period::Total]
        .into_iter()
        .find(|p| period_str(*p) == s)
}

pub fn period_str(period: Period) -> &'static str {
    match period {
        Period::Monthly => "monthly",
        Period::Weekly => "weekly",
        Period::Daily => "daily",
        Period::Total => "total",
    }
}

fn metadata_json(metadata: &BTreeMap<String, String>) -> String {
    serde_json::to_string(metadata).expect("a string map serializes")
}

pub(super) async fn insert_key<'e>(
    executor: impl AnyExecutor<'e>,
    key: &NewKey,
    secret: &Secret,
) -> StoreResult<KeyRow> {
    let now = now_ms();
    const SQL: &str = concat!(
        "INSERT INTO api_keys (id, tenant_id, name, scope, secret_hash, secret_hint, \
         max_spend_micros, period, metadata, disabled, created_ms, updated_ms, \
         stripe_customer_id, max_requests_per_minute, max_tokens_per_minute) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10, $11, $12, $13) RETURNING ",
        key_columns!(),
        ""
    );
    let row = sqlx::query_as::<_, KeyRow>(SQL)
        .bind(new_id("key"))
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(scope_str(key.scope))
        .bind(secret.hash_hex())
        .bind(secret.hint())
        .bind(key.max_spend_micros)
        .bind(period_str(key.period))
        .bind(metadata_json(&key.metadata))
        .bind(now)
        .bind(key.metadata.get(STRIPE_CUSTOMER).map(String::as_str))
        .bind(key.max_requests_per_minute)
        .bind(key.max_tokens_per_minute)
        .fetch_one(executor)
        .await?;
    Ok(row)
}

impl Store {
    pub async fn insert_key(&self, key: &NewKey, secret: &Secret) -> StoreResult<KeyRow> {
        insert_key(self.writer(), key, secret).await
    }

    /// The key a secret hash belongs to, whatever its state.
    pub async fn find_key_by_secret_hash(&self, hash: &str) -> StoreResult<Option<AuthRow>> {
        Ok(sqlx::query_as::<_, AuthRow>(
            "SELECT id, tenant_id, scope, period, secret_hash, disabled, revoked_ms \
             FROM api_keys WHERE secret_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn get_key(&self, tenant_id: &str, key_id: &str) -> StoreResult<KeyRow> {
        const SQL: &str =
            concat!("SELECT ", key_columns!(), " FROM api_keys WHERE tenant_id = $1 AND id = $2");
        sqlx::query_as::<_, KeyRow>(SQL)
            .bind(tenant_id)
            .bind(key_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("key", key_id))
    }

    /// Applies `changes` in one statement, so concurrent updates of different
    /// fields never undo each other. Revoked keys are not changed.
    pub async fn update_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        changes: &KeyChanges,
    ) -> StoreResult<KeyRow> {
        const SQL: &str = concat!(
            "UPDATE api_keys SET \
               name = COALESCE($3, name), \
               max_spend_micros = CASE WHEN $4 = 1 THEN $5 ELSE max_spend_micros END, \
               period = COALESCE($6, period), \
               metadata = COALESCE($7, metadata), \
               stripe_customer_id = CASE WHEN $7 IS NULL THEN stripe_customer_id ELSE $10 END, \
               disabled = COALESCE($8, disabled), \
               max_requests_per_minute = \
                 CASE WHEN $11 = 1 THEN $12 ELSE max_requests_per_minute END, \
               max_tokens_per_minute = CASE WHEN $13 = 1 THEN $14 ELSE max_tokens_per_minute END, \
               updated_ms = $9 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_ms IS NULL \
             RETURNING ",
            key_columns!(),
            ""
        );
        let row = sqlx::query_as::<_, KeyRow>(SQL)
            .bind(tenant_id)
            .bind(key_id)
            .bind(changes.name.as_deref())
            .bind(i64::from(changes.max_spend_micros.is_some()))
            .bind(changes.max_spend_micros.flatten())
            .bind(changes.period.map(period_str))
            .bind(changes.metadata.as_ref().map(metadata_json))
            .bind(changes.disabled.map(i64::from))
            .bind(now_ms())
            .bind(
                changes.metadata.as_ref().and_then(|m| m.get(STRIPE_CUSTOMER)).map(String::as_str),
            )
            .bind(i64::from(changes.max_requests_per_minute.is_some()))
            .bind(changes.max_requests_per_minute.flatten())
            .bind(i64::from(changes.max_tokens_per_minute.is_some()))
            .bind(changes.max_tokens_per_minute.flatten())
            .fetch_optional(self.writer())
            .await?;
        match row {
            Some(row) => Ok(row),
            None => Err(self.explain_unchanged(tenant_id, key_id).await),
        }
    }

    /// Marks the key revoked. Revoking twice is a conflict, not a success,
    /// so a caller learns the key was already gone.
    pub async fn revoke_key(&self, tenant_id: &str, key_id: &str) -> StoreResult<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $3, updated_ms = $3 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_ms IS NULL",
        )
        .bind(tenant_id)
        .bind(key_id)
        .bind(now)
        .execute(self.writer())
        .await?
        .rows_affected();
        if done == 1 { Ok(()) } else { Err(self.explain_unchanged(tenant_id, key_id).await) }
    }

    /// Replaces the secret of a live key; the old one stops working with the
    /// commit of this statement.
    pub async fn rotate_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        secret: &Secret,
    ) -> StoreResult<KeyRow> {
        let now = now_ms();
        const SQL: &str = concat!(
            "UPDATE api_keys SET secret_hash = $3, secret_hint = $4, rotated_ms = $5, \
             updated_ms = $5 WHERE tenant_id = $1 AND id = $2 AND revoked_ms IS NULL \
             RETURNING ",
            key_columns!(),
            ""
        );
        let row = sqlx::query_as::<_, KeyRow>(SQL)
            .bind(tenant_id)
            .bind(key_id)
            .bind(secret.hash_hex())
            .bind(secret.hint())
            .bind(now)
            .fetch_optional(self.writer())
            .await?;
        match row {
            Some(row) => Ok(row),
            None => Err(self.explain_unchanged(tenant_id, key_id).await),
        }
    }

    // Why a conditional write touched no row: the key is missing (for this
    // tenant) or revoked.
    async fn explain_unchanged(&self, tenant_id: &str, key_id: &str) -> Error {
        match self.get_key(tenant_id, key_id).await {
            Ok(row) if row.revoked_ms.is_some() => {
                Error::Conflict(format!("key {key_id} is revoked"))
            }
            Ok(_) => Error::Internal(format!("key {key_id} changed concurrently")),
            Err(e) => e,
        }
    }
}
