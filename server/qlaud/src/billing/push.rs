//! Pushes meter events to Stripe (`POST /v1/billing/meter_events`,
//! form-encoded, with the tenant's secret key). Only closed slices are sent
//! (a slice still open would be undercounted forever, since its identifier
//! is fixed); each accepted event is recorded, so pushing again sends
//! nothing twice, and Stripe's own idempotency on `identifier` covers a
//! crash between its answer and our record.

use std::time::Duration;

use qlaud_api::{MeterEvent, MeterSlice};

use crate::clock::Clock;
use crate::store::Store;

/// The Stripe API unless configured otherwise (a proxy, or a mock in tests).
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Events Stripe accepted now.
    pub sent: usize,
    /// Events pushed before.
    pub already_sent: usize,
    /// Events of slices not over yet.
    pub still_open: usize,
    /// Events that failed after retries.
    pub failed: usize,
}

impl PushSummary {
    fn counts(&self) -> [usize; 4] {
        [self.sent, self.already_sent, self.still_open, self.failed]
    }
}

/// Pushes `period`'s events of every tenant with a Stripe key (or only
/// `tenant`).
pub async fn push(
    store: &Store,
    clock: &Clock,
    api_base: &str,
    period: &str,
    slice: MeterSlice,
    tenant: Option<&str>,
) -> anyhow::Result<PushSummary> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?;
    let tenants = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.tenants_with_stripe().await?,
    };
    let mut summary = PushSummary::default();
    // Which slices are closed goes by the billing clock.
    let now_s = clock.now_ms() / 1000;
    for tenant_id in tenants {
        let Some(key) = store.billing_settings(&tenant_id).await?.and_then(|s| s.stripe_secret_key)
        else {
            anyhow::bail!("tenant {tenant_id} has no Stripe secret key configured");
        };
        let export = super::export(store, &tenant_id, period, slice).await?;
        let before = summary.counts();
        for event in export.events {
            if event.timestamp >= now_s {
                summary.still_open += 1;
                continue;
            }
            if store.meter_pushed(&tenant_id, &event.identifier).await? {
                summary.already_sent += 1;
                continue;
            }
            match send(&http, api_base, &key, &event).await {
                Ok(()) => {
                    let value = event.payload.value.parse().unwrap_or(0);
                    store
                        .record_meter_push(
                            &tenant_id,
                            &event.identifier,
                            &event.key_id,
                            value,
                            clock.now_ms(),
                        )
                        .await?;
                    summary.sent += 1;
                }
                Err(e) => {
                    tracing::error!(tenant_id, identifier = event.identifier, error = %e, "pushing a meter event");
                    summary.failed += 1;
                }
            }
        }
        // The billing settings show each tenant's last run.
        super::push_state::record(store, &tenant_id, period, summary.counts(), before).await?;
    }
    Ok(summary)
}

/// One event, retried with backoff on 429, 5xx and network errors.
async fn send(
    http: &reqwest::Client,
    api_base: &str,
    key: &str,
    e: &MeterEvent,
) -> anyhow::Result<()> {
    let form = [
        ("event_name", e.event_name.clone()),
        ("payload[stripe_customer_id]", e.payload.stripe_customer_id.clone()),
        ("payload[value]", e.payload.value.clone()),
        ("identifier", e.identifier.clone()),
        ("timestamp", e.timestamp.to_string()),
    ];
    let url = format!("{}/v1/billing/meter_events", api_base.trim_end_matches('/'));
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        let result = http.post(&url).bearer_auth(key).form(&form).send().await;
        let retry = match result {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                // Stripe already has this identifier: it was pushed before.
                if status == 400 && body.contains("identifier") && body.contains("already") {
                    return Ok(());
                }
                if status.as_u16() != 429 && !status.is_server_error() {
                    anyhow::bail!("Stripe refused the event ({status}): {body}");
                }
                format!("{status}")
            }
            Err(err) => err.to_string(),
        };
        if attempt == 5 {
            anyhow::bail!("Stripe did not accept the event after {attempt} tries: {retry}");
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the loop returns or bails")
}
