//! Stored secrets sealed at rest (see `crate::secrets`): sealing on write,
//! opening on read, sealing what an older version left in plain text, and
//! re-sealing everything under a new key.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::error::Error;
use crate::secrets::{self, SecretKey};

/// Every column holding a tenant's secret, by table; each row's owner is
/// its `tenant_id`.
const SECRET_COLUMNS: &[(&str, &str)] = &[
    ("billing_settings", "stripe_secret_key"),
    ("billing_settings", "webhook_secret"),
    ("billing_settings", "alert_signing_secret"),
    ("webhook_secrets", "secret"),
];

/// What a sealed value is bound to: its column and its tenant.
fn context(table: &str, column: &str, tenant_id: &str) -> String {
    format!("{table}.{column}:{tenant_id}")
}

/// One stored secret.
struct StoredSecret {
    table: &'static str,
    column: &'static str,
    tenant_id: String,
    value: String,
}

impl Store {
    /// The value to store for a secret: sealed when a key is configured.
    pub(super) fn seal(&self, table: &str, column: &str, tenant_id: &str, plain: &str) -> String {
        match &self.secret_key {
            Some(key) => key.seal(plain, &context(table, column, tenant_id)),
            None => plain.to_string(),
        }
    }

    /// A stored secret read back as plain text.
    pub(super) fn open_secret(
        &self,
        table: &str,
        column: &str,
        tenant_id: &str,
        stored: String,
    ) -> StoreResult<String> {
        if !secrets::is_sealed(&stored) {
            return Ok(stored);
        }
        let key = self.secret_key.as_ref().ok_or_else(|| {
            Error::Internal(format!("{table}.{column} is sealed and qlaud has no secret key"))
        })?;
        key.open(&stored, &context(table, column, tenant_id))
            .map_err(|e| Error::Internal(format!("{table}.{column} of {tenant_id}: {e}")))
    }

    /// `open` for a column that may be empty.
    pub(super) fn open_opt(
        &self,
        table: &str,
        column: &str,
        tenant_id: &str,
        stored: Option<String>,
    ) -> StoreResult<Option<String>> {
        stored.map(|s| self.open_secret(table, column, tenant_id, s)).transpose()
    }

    async fn stored_secrets(&self) -> StoreResult<Vec<StoredSecret>> {
        let mut out = Vec::new();
        for &(table, column) in SECRET_COLUMNS {
            let sql =
                format!("SELECT tenant_id, {column} AS v FROM {table} WHERE {column} IS NOT NULL");
            for r in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.writer()).await? {
                out.push(StoredSecret {
                    table,
                    column,
                    tenant_id: r.try_get("tenant_id")?,
                    value: r.try_get("v")?,
                });
            }
        }
        Ok(out)
    }

    /// Takes `key` (or no key) for the stored secrets: refuses a key that
    /// does not open them, or none when some are sealed, and seals the ones
    /// still in plain text (from a version that did not seal). Run at every
    /// start, before anything reads a secret.
    pub async fn use_secret_key(&mut self, key: Option<SecretKey>) -> anyhow::Result<()> {
        let stored = self.stored_secrets().await?;
        let Some(key) = key else {
            if let Some(s) = stored.iter().find(|s| secrets::is_sealed(&s.value)) {
                anyhow::bail!(
                    "the store holds secrets sealed with secret key {}, and no key was given: set \
                     QLAUD_SECRET_KEY or --secret-key-file to the key they were sealed with",
                    secrets::sealed_key_id(&s.value).unwrap_or("(unknown)")
                );
            }
            if !stored.is_empty() {
                tracing::warn!(
                    "no secret key (QLAUD_SECRET_KEY or --secret-key-file): tenants' Stripe keys \
                     and signing secrets are stored in plain text"
                );
            }
            self.secret_key = None;
            return Ok(());
        };
        let mut plain = 0;
        for s in &stored {
            if !secrets::is_sealed(&s.value) {
                let sealed = key.seal(&s.value, &context(s.table, s.column, &s.tenant_id));
                // Only if unchanged, so a concurrent write is not undone.
                let sql = format!(
                    "UPDATE {} SET {} = $1 WHERE tenant_id = $2 AND {} = $3",
                    s.table, s.column, s.column
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(sealed)
                    .bind(&s.tenant_id)
                    .bind(&s.value)
                    .execute(self.writer())
                    .await?;
                plain += 1;
                continue;
            }
            if let Err(e) = key.open(&s.value, &context(s.table, s.column, &s.tenant_id)) {
                anyhow::bail!(
                    "the secret key given (id {}) does not open {}.{} of tenant {}: {e}; give the \
                     key the store's secrets were sealed with",
                    key.id(),
                    s.table,
                    s.column,
                    s.tenant_id
                );
            }
        }
        if plain > 0 {
            tracing::info!(
                sealed = plain,
                key_id = key.id(),
                "sealed stored secrets kept in plain text"
            );
        }
        self.secret_key = Some(std::sync::Arc::new(key));
        Ok(())
    }

    /// Re-seals every stored secret under `new`, in one transaction; the
    /// store's current key opens them no more. Returns how many.
    pub async fn rotate_secret_key(&mut self, new: SecretKey) -> anyhow::Result<usize> {
        let stored = self.stored_secrets().await?;
        let mut tx = self.writer().begin().await?;
        for s in &stored {
            let plain = self.open_secret(s.table, s.column, &s.tenant_id, s.value.clone())?;
            let sealed = new.seal(&plain, &context(s.table, s.column, &s.tenant_id));
            let sql = format!("UPDATE {} SET {} = $1 WHERE tenant_id = $2", s.table, s.column);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(sealed)
                .bind(&s.tenant_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.secret_key = Some(std::sync::Arc::new(new));
        Ok(stored.len())
    }
}
