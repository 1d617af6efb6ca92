//! Billing out: settings, Stripe events, suspensions, meter pushes.

use sqlx::Row;

use super::{Store, StoreResult, new_id};

/// A tenant's billing settings as stored (secrets included: the API never
/// returns them, and nothing logs them).
#[derive(Clone, Default)]
pub struct SettingsRow {
    pub stripe_secret_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub meter_event_name: String,
    pub alert_webhook_url: Option<String>,
    pub alert_signing_secret: Option<String>,
}

impl std::fmt::Debug for SettingsRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsRow")
            .field("stripe_secret_key", &self.stripe_secret_key.as_ref().map(|_| "<set>"))
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<set>"))
            .field("meter_event_name", &self.meter_event_name)
            .field("alert_webhook_url", &self.alert_webhook_url)
            .field("alert_signing_secret", &self.alert_signing_secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What a spend alert needs to know about a key in a window.
pub struct AlertState {
    pub key_name: String,
    pub period: String,
    pub metadata: String,
    pub cap_micros: i64,
    pub settled_micros: i64,
    pub url: String,
    /// The `qlaud-signature` secret, during that header's deprecation
    /// window (see `billing::alerts`).
    pub legacy_secret: Option<String>,
}

/// Spend of one key in one slice of a month, for meter events.
pub struct MeterRow {
    pub key_id: String,
    pub customer: String,
    pub slice: i64,
    pub cost_micros: i64,
}

/// What one model was used for, per unit, for invoice lines.
pub struct ModelSums {
    pub model: String,
    pub cost_micros: i64,
    /// Quantity per unit, in unit order.
    pub units: std::collections::BTreeMap<String, i64>,
}

/// A suspension or reinstatement as stored.
pub struct BillingEventRow {
    pub stripe_event_id: String,
    pub stripe_event_type: String,
    pub old_status: String,
    pub new_status: String,
    pub created_ms: i64,
}

impl Store {
    pub async fn billing_settings(&self, tenant_id: &str) -> StoreResult<Option<SettingsRow>> {
        let row = sqlx::query(
            "SELECT stripe_secret_key, webhook_secret, meter_event_name, alert_webhook_url, \
             alert_signing_secret FROM billing_settings WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let secret = |column: &str| -> StoreResult<Option<String>> {
                self.open_opt("billing_settings", column, tenant_id, r.try_get(column)?)
            };
            Ok(SettingsRow {
                stripe_secret_key: secret("stripe_secret_key")?,
                webhook_secret: secret("webhook_secret")?,
                meter_event_name: r.try_get("meter_event_name")?,
                alert_webhook_url: r.try_get("alert_webhook_url")?,
                alert_signing_secret: secret("alert_signing_secret")?,
            })
        })
        .transpose()
    }

    pub async fn put_billing_settings(
        &self,
        tenant_id: &str,
        s: &SettingsRow,
        now_ms: i64,
    ) -> StoreResult<()> {
        let seal = |v: &Option<String>, column: &str| {
            v.as_deref().map(|v| self.seal("billing_settings", column, tenant_id, v))
        };
        sqlx::query(
            "INSERT INTO billing_settings (tenant_id, stripe_secret_key, webhook_secret, \
             meter_event_name, alert_webhook_url, updated_ms, alert_signing_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id) DO UPDATE SET stripe_secret_key = excluded.stripe_secret_key, \
             webhook_secret = excluded.webhook_secret, meter_event_name = excluded.meter_event_name, \
             alert_webhook_url = excluded.alert_webhook_url, updated_ms = excluded.updated_ms, \
             alert_signing_secret = excluded.alert_signing_secret",
        )
        .bind(tenant_id)
        .bind(seal(&s.stripe_secret_key, "stripe_secret_key"))
        .bind(seal(&s.webhook_secret, "webhook_secret"))
        .bind(s.meter_event_name.as_str())
        .bind(s.alert_webhook_url.as_deref())
        .bind(now_ms)
        .bind(seal(&s.alert_signing_secret, "alert_signing_secret"))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The cap, spend and alert target of a capped key whose tenant wants
    /// alerts; `None` otherwise.
    pub async fn alert_state(
        &self,
        key_id: &str,
        period_start_ms: i64,
    ) -> StoreResult<Option<AlertState>> {
        let row = sqlx::query(
            "SELECT k.tenant_id, k.name, k.period, k.metadata, k.max_spend_micros, \
             s.settled_micros, b.alert_webhook_url, b.alert_signing_secret \
             FROM api_keys k JOIN key_spend s ON s.key_id = k.id AND s.period_start_ms = $2 \
             JOIN billing_settings b ON b.tenant_id = k.tenant_id \
             WHERE k.id = $1 AND k.max_spend_micros > 0 AND b.alert_webhook_url IS NOT NULL",
        )
        .bind(key_id)
        .bind(period_start_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(AlertState {
                key_name: r.try_get("name")?,
                period: r.try_get("period")?,
                metadata: r.try_get("metadata")?,
                cap_micros: r.try_get("max_spend_micros")?,
                settled_micros: r.try_get("settled_micros")?,
                url: r.try_get("alert_webhook_url")?,
                legacy_secret: self.open_opt(
                    "billing_settings",
                    "alert_signing_secret",
                    &r.try_get::<String, _>("tenant_id")?,
                    r.try_get("alert_signing_secret")?,
                )?,
            })
        })
        .transpose()
    }

    /// Claims the right to send one alert; `false` if it was sent already.
    pub async fn claim_alert(
        &self,
        key_id: &str,
        period_start_ms: i64,
        threshold: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "INSERT INTO spend_alerts (key_id, period_start_ms, threshold, sent_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(period_start_ms)
        .bind(threshold)
        .bind(now_ms)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    /// Tenants that set a Stripe secret key.
    pub async fn tenants_with_stripe(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT tenant_id FROM billing_settings WHERE stripe_secret_key IS NOT NULL ORDER BY tenant_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("tenant_id")?)).collect()
    }

    /// Records a Stripe event id; `false` if it was seen before.
    pub async fn record_stripe_event(
        &self,
        tenant_id: &str,
        event_id: &str,
        kind: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(sqlx::query(
            "INSERT INTO stripe_events (tenant_id, event_id, event_type, received_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(event_id)
        .bind(kind)
        .bind(now_ms)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    /// Suspends (or reinstates) every live key of a Stripe customer, unless a
    /// newer Stripe event already decided for that key. Records each change.
    /// Returns how many keys changed state.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_customer_suspended(
        &self,
        tenant_id: &str,
        customer: &str,
        suspend: bool,
        event_id: &str,
        event_type: &str,
        event_created_ms: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.writer().begin().await?;
        let keys = sqlx::query(
            "SELECT id, suspended_ms FROM api_keys WHERE tenant_id = $1 AND stripe_customer_id = $2 \
             AND revoked_ms IS NULL AND (billing_event_ms IS NULL OR billing_event_ms <= $3)",
        )
        .bind(tenant_id)
        .bind(customer)
        .bind(event_created_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for key in keys {
            let id: String = key.try_get("id")?;
            let was_suspended = key.try_get::<Option<i64>, _>("suspended_ms")?.is_some();
            sqlx::query(
                "UPDATE api_keys SET billing_event_ms = $2, \
                 suspended_ms = CASE WHEN $3 = 1 THEN COALESCE(suspended_ms, $4) ELSE NULL END \
                 WHERE id = $1",
            )
            .bind(&id)
            .bind(event_created_ms)
            .bind(i64::from(suspend))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if was_suspended != suspend {
                changed += 1;
                let status = |s: bool| if s { "suspended" } else { "active" };
                sqlx::query(
                    "INSERT INTO key_billing_events (id, tenant_id, key_id, stripe_event_id, \
                     stripe_event_type, old_status, new_status, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(new_id("kbe"))
                .bind(tenant_id)
                .bind(&id)
                .bind(event_id)
                .bind(event_type)
                .bind(status(was_suspended))
                .bind(status(suspend))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub async fn key_billing_events(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> StoreResult<Vec<BillingEventRow>> {
        let rows = sqlx::query(
            "SELECT stripe_event_id, stripe_event_type, old_status, new_status, created_ms \
             FROM key_billing_events WHERE tenant_id = $1 AND key_id = $2 ORDER BY created_ms, id",
        )
        .bind(tenant_id)
        .bind(key_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BillingEventRow {
                    stripe_event_id: r.try_get("stripe_event_id")?,
                    stripe_event_type: r.try_get("stripe_event_type")?,
                    old_status: r.try_get("old_status")?,
                    new_status: r.try_get("new_status")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// Spend per key (with a Stripe customer) and slice of `slice_ms` in
    /// `[from_ms, to_ms)`.
    pub async fn meter_usage(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        slice_ms: i64,
    ) -> StoreResult<Vec<MeterRow>> {
        let rows = sqlx::query(
            "SELECT r.key_id, k.stripe_customer_id, \
             CAST((r.created_ms - $2) / $4 AS BIGINT) AS slice, \
             CAST(SUM(r.cost_micros) AS BIGINT) AS cost \
             FROM requests r JOIN api_keys k ON k.id = r.key_id \
             WHERE r.tenant_id = $1 AND r.created_ms >= $2 AND r.created_ms < $3 \
             AND k.stripe_customer_id IS NOT NULL \
             GROUP BY r.key_id, k.stripe_customer_id, CAST((r.created_ms - $2) / $4 AS BIGINT) \
             ORDER BY r.key_id, slice",
        )
        .bind(tenant_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(slice_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MeterRow {
                    key_id: r.try_get("key_id")?,
                    customer: r.try_get("stripe_customer_id")?,
                    slice: r.try_get("slice")?,
                    cost_micros: r.try_get("cost")?,
                })
            })
            .collect()
    }

    pub async fn meter_pushed(&self, tenant_id: &str, identifier: &str) -> StoreResult<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM meter_pushes WHERE tenant_id = $1 AND identifier = $2",
        )
        .bind(tenant_id)
        .bind(identifier)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    pub async fn record_meter_push(
        &self,
        tenant_id: &str,
        identifier: &str,
        key_id: &str,
        value: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO meter_pushes (tenant_id, identifier, key_id, value, pushed_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(identifier)
        .bind(key_id)
        .bind(value)
        .bind(now_ms)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Token and cost sums per model of one key in `[from_ms, to_ms)`.
    pub async fn model_sums(
        &self,
        tenant_id: &str,
        key_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<ModelSums>> {
        let costs = sqlx::query(
            "SELECT model, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost, \
             COUNT(*) AS requests, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
             CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens \
             FROM requests WHERE tenant_id = $1 AND key_id = $2 AND created_ms >= $3 \
             AND created_ms < $4 GROUP BY model ORDER BY model",
        )
        .bind(tenant_id)
        .bind(key_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        let mut sums = costs
            .iter()
            .map(|r| {
                let columns = super::UsageRow {
                    requests: r.try_get("requests")?,
                    input_tokens: r.try_get("input_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    cache_read_tokens: r.try_get("cache_read_tokens")?,
                    cache_write_tokens: r.try_get("cache_write_tokens")?,
                    ..Default::default()
                };
                Ok(ModelSums {
                    model: r.try_get("model")?,
                    cost_micros: r.try_get("cost")?,
                    units: super::usage::column_units(&columns),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let units = sqlx::query(
            "SELECT r.model, u.unit, CAST(COALESCE(SUM(u.quantity), 0) AS BIGINT) AS q \
             FROM request_units u JOIN requests r ON r.id = u.request_id \
             WHERE r.tenant_id = $1 AND r.key_id = $2 AND r.created_ms >= $3 \
             AND r.created_ms < $4 GROUP BY r.model, u.unit",
        )
        .bind(tenant_id)
        .bind(key_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?;
        for r in units {
            let model: String = r.try_get("model")?;
            if let Some(m) = sums.iter_mut().find(|m| m.model == model) {
                m.units.insert(r.try_get("unit")?, r.try_get("q")?);
            }
        }
        Ok(sums)
    }
}
