//! Stored secrets sealed at rest (see `crate::secrets`): sealing on write,
//! opening on read (with the current key or, during a rolling rotation,
//! the previous one), sealing what an older version left in plain text,
//! and re-sealing everything under a new key.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::error::Error;
use crate::secrets::{self, Keyring, SecretKey};

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
        let keys = self.secret_key.as_ref().ok_or_else(|| {
            Error::Internal(format!("{table}.{column} is sealed and qlaud has no secret key"))
        })?;
        keys.open(&stored, &context(table, column, tenant_id))
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

    /// Takes `key` (or no key), and `previous` (the key before it, during a
    /// rolling rotation), for the stored secrets: refuses keys that do not
    /// open them, or none when some are sealed, and seals the ones still in
    /// plain text (from a version that did not seal) with `key`. Run at
    /// every start, before anything reads a secret.
    pub async fn use_secret_key(
        &mut self,
        key: Option<SecretKey>,
        previous: Option<SecretKey>,
    ) -> anyhow::Result<()> {
        let stored = self.stored_secrets().await?;
        let Some(key) = key else {
            anyhow::ensure!(
                previous.is_none(),
                "a previous secret key (QLAUD_SECRET_KEY_PREVIOUS or --previous-secret-key-file) \
                 was given without a current one (QLAUD_SECRET_KEY or --secret-key-file)"
            );
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
        let previous = previous.filter(|p| p.id() != key.id());
        let keys = Keyring { current: key, previous };
        let (mut plain, mut by_previous) = (0, 0);
        for s in &stored {
            if !secrets::is_sealed(&s.value) {
                let sealed = keys.seal(&s.value, &context(s.table, s.column, &s.tenant_id));
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
            if let Err(e) = keys.open(&s.value, &context(s.table, s.column, &s.tenant_id)) {
                let previous = keys.previous.as_ref().map(SecretKey::id);
                anyhow::bail!(
                    "the secret key given (id {}{}) does not open {}.{} of tenant {}: {e}; give \
                     the key the store's secrets were sealed with",
                    keys.current.id(),
                    previous.map(|p| format!(", previous {p}")).unwrap_or_default(),
                    s.table,
                    s.column,
                    s.tenant_id
                );
            }
            if secrets::sealed_key_id(&s.value) != Some(keys.current.id()) {
                by_previous += 1;
            }
        }
        if plain > 0 {
            tracing::info!(
                sealed = plain,
                key_id = keys.current.id(),
                "sealed stored secrets kept in plain text"
            );
        }
        if let Some(previous) = &keys.previous {
            tracing::info!(
                current = keys.current.id(),
                previous = previous.id(),
                still_sealed_with_previous = by_previous,
                "a secret-key rotation is under way: sealing with the current key, opening with \
                 either; `qlaud admin rotate-secret-key` re-seals the rest"
            );
        }
        self.secret_key = Some(std::sync::Arc::new(keys));
        Ok(())
    }

    /// The keys opening stored secrets, if any.
    pub fn secret_keys(&self) -> Option<&Keyring> {
        self.secret_key.as_deref()
    }

    /// Re-seals under `new` every stored secret it did not seal, each only
    /// if unchanged since it was read, so a secret written meanwhile by a
    /// running process (sealed with `new`, its current key, in a rolling
    /// rotation) is never overwritten with an older value; in one
    /// transaction. Afterwards only `new` opens them. Returns how many were
    /// re-sealed.
    pub async fn rotate_secret_key(&mut self, new: SecretKey) -> anyhow::Result<usize> {
        let mut rotated = 0;
        // A secret changed between reading and re-sealing is read again:
        // a few passes settle it.
        for _ in 0..5 {
            let stale: Vec<StoredSecret> = self
                .stored_secrets()
                .await?
                .into_iter()
                .filter(|s| secrets::sealed_key_id(&s.value) != Some(new.id()))
                .collect();
            if stale.is_empty() {
                break;
            }
            let mut tx = self.writer().begin().await?;
            for s in &stale {
                let plain = self.open_secret(s.table, s.column, &s.tenant_id, s.value.clone())?;
                let sealed = new.seal(&plain, &context(s.table, s.column, &s.tenant_id));
                let sql = format!(
                    "UPDATE {} SET {} = $1 WHERE tenant_id = $2 AND {} = $3",
                    s.table, s.column, s.column
                );
                rotated += sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(sealed)
                    .bind(&s.tenant_id)
                    .bind(&s.value)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
            }
            tx.commit().await?;
        }
        let left = self
            .stored_secrets()
            .await?
            .iter()
            .filter(|s| secrets::sealed_key_id(&s.value) != Some(new.id()))
            .count();
        anyhow::ensure!(left == 0, "{left} stored secrets kept changing and were not re-sealed");
        self.secret_key = Some(std::sync::Arc::new(Keyring { current: new, previous: None }));
        Ok(rotated)
    }
}
