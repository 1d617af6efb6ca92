//! Tenants, and the one-time bootstrap of the first one.

use sqlx::Row;

use super::{NewKey, Store, StoreResult, new_id, now_ms};
use crate::keys::secret::Secret;

/// A tenant as stored.
#[derive(Clone, Debug)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

impl Store {
    /// Creates a tenant and its master (admin) key, in one transaction.
    pub async fn create_tenant(&self, name: &str) -> StoreResult<(TenantRow, Secret)> {
        let mut tx = self.writer().begin().await?;
        let (tenant, secret) = insert_tenant(self, &mut tx, name).await?;
        tx.commit().await?;
        Ok((tenant, secret))
    }

    /// On a store with no tenant yet, creates the first one and returns its
    /// master key; `None` when the store was already set up. Safe when several
    /// qlaud processes start at once on one database: exactly one bootstraps.
    pub async fn bootstrap(&self) -> StoreResult<Option<(TenantRow, Secret)>> {
        let mut tx = self.writer().begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('bootstrapped', $1) ON CONFLICT DO NOTHING",
        )
        .bind(now_ms().to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let tenants: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if !claimed || tenants > 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let created = insert_tenant(self, &mut tx, "default").await?;
        tx.commit().await?;
        Ok(Some(created))
    }

    pub async fn get_tenant(&self, id: &str) -> StoreResult<Option<TenantRow>> {
        let row = sqlx::query("SELECT id, name, created_ms FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(TenantRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_ms: r.try_get("created_ms")?,
            }),
            None => None,
        })
    }
}

async fn insert_tenant(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
) -> StoreResult<(TenantRow, Secret)> {
    let tenant = TenantRow { id: new_id("ten"), name: name.to_string(), created_ms: now_ms() };
    sqlx::query("INSERT INTO tenants (id, name, created_ms) VALUES ($1, $2, $3)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_ms)
        .execute(&mut **tx)
        .await?;
    super::webhook_secrets::insert_for_new_tenant(store, tx, &tenant.id, tenant.created_ms).await?;
    let secret = Secret::generate();
    let key = NewKey {
        tenant_id: tenant.id.clone(),
        name: "master".to_string(),
        scope: qlaud_api::KeyScope::Admin,
        max_spend_micros: None,
        period: qlaud_api::Period::Monthly,
        metadata: Default::default(),
        max_requests_per_minute: None,
        max_tokens_per_minute: None,
    };
    super::keys::insert_key(&mut **tx, &key, &secret).await?;
    Ok((tenant, secret))
}
