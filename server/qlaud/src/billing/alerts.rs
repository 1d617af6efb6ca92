//! Spend alerts: a signed POST to the tenant's alert URL when a key's
//! settled spend crosses 50 %, 80 % and 100 % of its cap, once per
//! threshold and window. The store decides "once" (a unique row per key,
//! window and threshold), so concurrent settlements and several processes
//! never send one twice. Delivery goes through [`crate::outbound`]: fenced,
//! Standard Webhooks-signed with the tenant's `whsec_` secret, retried.
//!
//! Deprecation window: until qlaud 0.3, alerts also carry the older
//! `qlaud-signature: t=<unix>,v1=<hex>` header (HMAC-SHA256 of
//! `"{t}.{body}"` with the tenant's `alert_signing_secret`, as Stripe
//! signs), so receivers built for it keep working while they move to the
//! Standard Webhooks headers.

use std::sync::Arc;

use serde_json::json;

use super::signature::sign;
use crate::meter::{RequestRecord, SpendHook};
use crate::outbound::{self, Backoff, Limits, Message, Outbound, OutboundError, WebhookSecret};
use crate::store::{Store, now_ms};

pub const THRESHOLDS: [i64; 3] = [50, 80, 100];

/// Spend alerts as the meter's hook: checked after every settled batch and
/// when a request is refused for the cap, off the request path.
pub struct Alerts {
    pub store: Store,
    pub outbound: Arc<Outbound>,
}

impl SpendHook for Alerts {
    fn settled(&self, records: &[RequestRecord]) {
        let mut keys: Vec<(String, String, i64)> = records
            .iter()
            .filter(|r| r.cost_micros > 0)
            .map(|r| (r.tenant_id.clone(), r.key_id.clone(), r.period_start_ms))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return;
        }
        let (store, outbound) = (self.store.clone(), self.outbound.clone());
        tokio::spawn(async move {
            for (tenant, key, start) in keys {
                check_key(&store, &outbound, &tenant, &key, start, false).await;
            }
        });
    }

    fn cap_reached(&self, tenant_id: &str, key_id: &str, period_start_ms: i64) {
        let (store, outbound) = (self.store.clone(), self.outbound.clone());
        let (tenant, key) = (tenant_id.to_string(), key_id.to_string());
        tokio::spawn(async move {
            check_key(&store, &outbound, &tenant, &key, period_start_ms, true).await
        });
    }
}

/// Sends the alerts due for one key and window. `cap_reached`: a request
/// was just refused for the cap, so 100 % is due even though settled spend
/// stops short of the cap (clamping keeps it below).
pub async fn check_key(
    store: &Store,
    outbound: &Arc<Outbound>,
    tenant_id: &str,
    key_id: &str,
    period_start_ms: i64,
    cap_reached: bool,
) {
    let state = match store.alert_state(key_id, period_start_ms).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading alert state");
            return;
        }
    };
    for threshold in THRESHOLDS {
        let crossed = i128::from(state.settled_micros) * 100
            >= i128::from(state.cap_micros) * i128::from(threshold);
        if !(crossed || (cap_reached && threshold == 100)) {
            continue;
        }
        match store.claim_alert(key_id, period_start_ms, threshold, now_ms()).await {
            Ok(true) => {
                let body = json!({
                    "type": "spend_alert",
                    "tenant_id": tenant_id,
                    "key_id": key_id,
                    "key_name": state.key_name,
                    "threshold_percent": threshold,
                    "spent_micros": state.settled_micros,
                    "cap_micros": state.cap_micros,
                    "period": state.period,
                    "period_start": chrono::DateTime::from_timestamp_millis(period_start_ms)
                        .map(|t| t.to_rfc3339()),
                    "metadata": serde_json::from_str::<serde_json::Value>(&state.metadata)
                        .unwrap_or_default(),
                })
                .to_string();
                let (store, outbound) = (store.clone(), outbound.clone());
                let (tenant, url, legacy) =
                    (tenant_id.to_string(), state.url.clone(), state.legacy_secret.clone());
                tokio::spawn(async move {
                    send(&store, &outbound, &tenant, &url, legacy.as_deref(), body).await
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a spend alert"),
        }
    }
}

/// POSTs one alert, retrying with backoff. The signing secret is read for
/// every attempt, so a rotation takes effect even mid-retry.
async fn send(
    store: &Store,
    outbound: &Outbound,
    tenant_id: &str,
    url: &str,
    legacy_secret: Option<&str>,
    body: String,
) {
    let message = Message::new(body);
    let limits = Limits::default();
    let outcome = outbound::retry(Backoff::ALERTS, |_| async {
        let row = store
            .webhook_secret(tenant_id)
            .await
            .map_err(|e| OutboundError::Failed(format!("reading the signing secret: {e}")))?;
        let secret = WebhookSecret::parse(&row.secret)
            .map_err(|e| OutboundError::Failed(format!("the stored signing secret: {e}")))?;
        let legacy: Vec<(&'static str, String)> = legacy_secret
            .map(|s| {
                let t = now_ms() / 1000;
                ("qlaud-signature", format!("t={t},v1={}", sign(s, t, &message.body)))
            })
            .into_iter()
            .collect();
        outbound.send(&secret, url, &message, limits, &legacy).await
    })
    .await;
    if let Err(e) = outcome {
        tracing::warn!(tenant_id, url, error = %e, "spend alert not delivered");
    }
}
