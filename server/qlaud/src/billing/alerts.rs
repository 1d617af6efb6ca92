//! Spend alerts: a signed POST to the tenant's alert URL when a key's
//! settled spend crosses 50 %, 80 % and 100 % of its cap, once per
//! threshold and window. The store decides "once" (a unique row per key,
//! window and threshold), so concurrent settlements and several processes
//! never send one twice.

use std::time::Duration;

use serde_json::json;

use super::signature::sign;
use crate::meter::{RequestRecord, SpendHook};
use crate::store::{Store, now_ms};

pub const THRESHOLDS: [i64; 3] = [50, 80, 100];

/// Spend alerts as the meter's hook: checked after every settled batch and
/// when a request is refused for the cap, off the request path.
pub struct Alerts {
    pub store: Store,
    pub http: reqwest::Client,
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
        let (store, http) = (self.store.clone(), self.http.clone());
        tokio::spawn(async move {
            for (tenant, key, start) in keys {
                check_key(&store, &http, &tenant, &key, start, false).await;
            }
        });
    }

    fn cap_reached(&self, tenant_id: &str, key_id: &str, period_start_ms: i64) {
        let (store, http) = (self.store.clone(), self.http.clone());
        let (tenant, key) = (tenant_id.to_string(), key_id.to_string());
        tokio::spawn(async move {
            check_key(&store, &http, &tenant, &key, period_start_ms, true).await
        });
    }
}

/// Sends the alerts due for one key and window. `cap_reached`: a request
/// was just refused for the cap, so 100 % is due even though settled spend
/// stops short of the cap (clamping keeps it below).
pub async fn check_key(
    store: &Store,
    http: &reqwest::Client,
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
                let (http, url, secret) = (http.clone(), state.url.clone(), state.secret.clone());
                tokio::spawn(async move { send(&http, &url, &secret, body).await });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a spend alert"),
        }
    }
}

/// POSTs with `qlaud-signature: t=<unix>,v1=<hmac>` (Stripe's scheme, with
/// the tenant's alert signing secret), retrying with backoff.
async fn send(http: &reqwest::Client, url: &str, secret: &str, body: String) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=5 {
        let t = now_ms() / 1000;
        let signature = format!("t={t},v1={}", sign(secret, t, body.as_bytes()));
        let result = http
            .post(url)
            .header("content-type", "application/json")
            .header("qlaud-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                tracing::warn!(url, status = %resp.status(), attempt, "spend alert refused")
            }
            Err(e) => tracing::warn!(url, error = %e, attempt, "spend alert failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}
