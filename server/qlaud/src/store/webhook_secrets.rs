//! Each tenant's outgoing signing secret (see migration 0008).

use sqlx::Row;

use super::{Store, StoreResult};
use crate::outbound::WebhookSecret;

/// A tenant's signing secret as stored.
pub struct WebhookSecretRow {
    /// `whsec_…`.
    pub secret: String,
    pub created_ms: i64,
}

impl Store {
    /// The tenant's signing secret, made now if it has none yet (a tenant
    /// from before migration 0008). Concurrent first uses, in one process
    /// or several, insert at most one and all read the same.
    pub async fn webhook_secret(&self, tenant_id: &str) -> StoreResult<WebhookSecretRow> {
        if let Some(row) = self.read_webhook_secret(tenant_id).await? {
            return Ok(row);
        }
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(self.seal("webhook_secrets", "secret", tenant_id, &WebhookSecret::generate()))
        .bind(super::now_ms())
        .execute(self.writer())
        .await?;
        match self.read_webhook_secret(tenant_id).await? {
            Some(row) => Ok(row),
            None => Err(crate::error::Error::Internal(format!(
                "the webhook secret of tenant {tenant_id} was not stored"
            ))),
        }
    }

    /// Replaces the tenant's signing secret; the old one signs nothing more.
    pub async fn replace_webhook_secret(
        &self,
        tenant_id: &str,
        secret: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET secret = excluded.secret, \
             created_ms = excluded.created_ms",
        )
        .bind(tenant_id)
        .bind(self.seal("webhook_secrets", "secret", tenant_id, secret))
        .bind(now_ms)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn read_webhook_secret(&self, tenant_id: &str) -> StoreResult<Option<WebhookSecretRow>> {
        let row =
            sqlx::query("SELECT secret, created_ms FROM webhook_secrets WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            Ok(WebhookSecretRow {
                secret: self.open_secret(
                    "webhook_secrets",
                    "secret",
                    tenant_id,
                    r.try_get("secret")?,
                )?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .transpose()
    }
}

/// Inserts a new tenant's secret inside its creating transaction.
pub(super) async fn insert_for_new_tenant(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO webhook_secrets (tenant_id, secret, created_ms) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(store.seal("webhook_secrets", "secret", tenant_id, &WebhookSecret::generate()))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
