//! Spend alerts: a signed POST to the tenant's alert URL when a key's
//! settled spend crosses 50 %, 80 % and 100 % of its cap, once per
//! threshold and window. The store decides "once" (a unique row per key,
//! window and threshold), so concurrent settlements and several processes
//! never send one twice.

use std::time::Duration;

use serde_json::json;

use super::signature::sign;
use crate::meter::RequestRecord;
use crate::store::{Store, now_ms};

pub const THRESHOLDS: [i64; 3] = [50, 80, 100];

/// Checks the keys of freshly settled records and sends what is due.
pub async fn check(store: &Store, http: &reqwest::Client, records: &[RequestRecord]) {
    let mut seen = std::collections::HashSet::new();
    for r in records {
        if r.cost_micros > 0 && seen.insert((r.key_id.as_str(), r.period_start_ms)) {
            check_key(store, http, &r.tenant_id, &r.key_id, r.period_start_ms, false).await;
        }
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
