//! Billing out: the tenant's Stripe settings, failed-payment webhooks that
//! suspend keys, meter events for Stripe Billing Meters, invoice previews.

pub mod alerts;
pub mod push;
pub mod push_state;
pub mod signature;

use chrono::NaiveDate;
use qlaud_api::{
    BillingSettings, BillingSettingsUpdate, InvoiceLine, InvoicePreview, KeyBillingEvent,
    MeterEvent, MeterEventPayload, MeterExport, MeterSlice, StripePushState, StripeWebhookResult,
    Usd,
};
use serde_json::Value;

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{SettingsRow, Store};
use crate::units::Unit;

pub const DEFAULT_METER_EVENT: &str = "qlaud_spend";

fn wire(tenant_id: &str, s: &SettingsRow, stripe_push: StripePushState) -> BillingSettings {
    BillingSettings {
        stripe_push,
        alert_signing_secret: None,
        stripe_secret_key_set: s.stripe_secret_key.is_some(),
        webhook_secret_set: s.webhook_secret.is_some(),
        meter_event_name: s.meter_event_name.clone(),
        alert_webhook_url: s.alert_webhook_url.clone(),
        webhook_path: format!("/v1/billing/stripe/webhook/{tenant_id}"),
    }
}

async fn current(store: &Store, tenant_id: &str) -> Result<SettingsRow> {
    Ok(store.billing_settings(tenant_id).await?.unwrap_or_else(|| SettingsRow {
        meter_event_name: DEFAULT_METER_EVENT.to_string(),
        ..Default::default()
    }))
}

pub async fn get_settings(ctx: &Context, caller: &Caller) -> Result<BillingSettings> {
    let push = push_state::state(&ctx.store, &caller.tenant_id).await?;
    Ok(wire(&caller.tenant_id, &current(&ctx.store, &caller.tenant_id).await?, push))
}

/// `Some(None)` clears a setting (empty string), `Some(Some(v))` sets it.
fn change(v: Option<String>) -> Option<Option<String>> {
    v.map(|s| if s.is_empty() { None } else { Some(s) })
}

pub async fn update_settings(
    ctx: &Context,
    caller: &Caller,
    u: BillingSettingsUpdate,
) -> Result<BillingSettings> {
    let mut s = current(&ctx.store, &caller.tenant_id).await?;
    // Both secrets end up in HTTP headers and signatures.
    for (field, v) in
        [("stripe_secret_key", &u.stripe_secret_key), ("webhook_secret", &u.webhook_secret)]
    {
        if v.as_deref().is_some_and(qlaud_api::text::has_control) {
            return Err(Error::invalid(format!("{field} must not contain control characters")));
        }
    }
    if let Some(key) = change(u.stripe_secret_key) {
        if let Some(k) = &key
            && !(k.starts_with("sk_") || k.starts_with("rk_"))
        {
            return Err(Error::invalid(
                "stripe_secret_key must be a Stripe secret key (sk_… or rk_…)",
            ));
        }
        s.stripe_secret_key = key;
    }
    if let Some(secret) = change(u.webhook_secret) {
        if let Some(w) = &secret
            && !w.starts_with("whsec_")
        {
            return Err(Error::invalid("webhook_secret must be a Stripe signing secret (whsec_…)"));
        }
        s.webhook_secret = secret;
    }
    if let Some(name) = u.meter_event_name {
        let ok = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !ok {
            return Err(Error::invalid(
                "meter_event_name must be 1 to 100 letters, digits, '_', '-' or '.'",
            ));
        }
        s.meter_event_name = name;
    }
    if let Some(url) = change(u.alert_webhook_url) {
        // The outbound policy is the only gate; it is checked again, with
        // the resolved addresses, on every delivery.
        if let Some(u) = &url {
            ctx.outbound.validate("alert_webhook_url", u)?;
        }
        s.alert_webhook_url = url;
    }
    // The `qlaud-signature` secret, made when the first alert URL is set
    // and shown only in that answer; deprecated for the tenant's Standard
    // Webhooks secret (rotate_webhook_secret), kept for its window.
    let new_secret =
        (s.alert_webhook_url.is_some() && s.alert_signing_secret.is_none()).then(|| {
            let random = crate::keys::secret::Secret::generate();
            format!("qlaud_whsec_{}", &random.expose()[crate::keys::secret::PREFIX.len()..])
        });
    if new_secret.is_some() {
        s.alert_signing_secret = new_secret.clone();
    }
    ctx.store.put_billing_settings(&caller.tenant_id, &s, ctx.clock.now_ms()).await?;
    let push = push_state::state(&ctx.store, &caller.tenant_id).await?;
    Ok(BillingSettings { alert_signing_secret: new_secret, ..wire(&caller.tenant_id, &s, push) })
}

/// What a Stripe event means for the customer's keys: `Some(true)` suspend,
/// `Some(false)` reinstate, `None` nothing.
fn verdict(kind: &str, object: &Value) -> Option<bool> {
    match kind {
        "invoice.payment_failed" | "customer.subscription.deleted" => Some(true),
        "invoice.paid" => Some(false),
        "customer.subscription.updated" | "customer.subscription.created" => {
            match object["status"].as_str() {
                Some("unpaid" | "canceled") => Some(true),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Verifies and applies one Stripe webhook delivery.
pub async fn webhook(
    ctx: &Context,
    tenant_id: &str,
    signature_header: Option<&str>,
    body: &[u8],
) -> Result<StripeWebhookResult> {
    let settings = ctx.store.billing_settings(tenant_id).await?;
    let Some(secret) = settings.and_then(|s| s.webhook_secret) else {
        return Err(Error::invalid("this tenant has no Stripe webhook secret configured"));
    };
    signature::verify(signature_header, body, &secret, ctx.clock.now_ms() / 1000)
        .map_err(Error::InvalidRequest)?;
    let event: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("the event is not JSON: {e}")))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(Error::invalid("the event has no id or type"));
    };
    let now = ctx.clock.now_ms();
    if !ctx.store.record_stripe_event(tenant_id, id, kind, now).await? {
        return Ok(StripeWebhookResult { received: true, duplicate: true, keys_changed: 0 });
    }
    let object = &event["data"]["object"];
    let mut changed = 0;
    if let (Some(suspend), Some(customer)) = (verdict(kind, object), object["customer"].as_str()) {
        // Stripe's `created` (seconds) orders events that arrive out of order.
        let created_ms = event["created"].as_i64().map_or(now, |s| s * 1000);
        changed = ctx
            .store
            .set_customer_suspended(tenant_id, customer, suspend, id, kind, created_ms, now)
            .await?;
        if changed > 0 {
            ctx.auth_cache.clear();
            tracing::info!(
                tenant_id,
                event = id,
                kind,
                customer,
                keys = changed,
                suspend,
                "billing state changed"
            );
        }
    }
    Ok(StripeWebhookResult { received: true, duplicate: false, keys_changed: changed })
}

pub async fn key_events(
    ctx: &Context,
    caller: &Caller,
    key_id: &str,
) -> Result<Vec<KeyBillingEvent>> {
    ctx.store.get_key(&caller.tenant_id, key_id).await?;
    Ok(ctx
        .store
        .key_billing_events(&caller.tenant_id, key_id)
        .await?
        .into_iter()
        .map(|e| KeyBillingEvent {
            stripe_event_id: e.stripe_event_id,
            stripe_event_type: e.stripe_event_type,
            old_status: e.old_status,
            new_status: e.new_status,
            at: chrono::DateTime::from_timestamp_millis(e.created_ms).unwrap_or_default(),
        })
        .collect())
}

/// `YYYY-MM` as `[start, end)` in Unix ms.
pub fn month(period: &str) -> Result<(i64, i64)> {
    let bad = || Error::invalid(format!("period must be a month, YYYY-MM, got {period:?}"));
    // chrono's %Y also takes signs and longer years (`-2026-11`, `+12026-11`).
    let b = period.as_bytes();
    if b.len() != 7
        || b[4] != b'-'
        || !b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit())
    {
        return Err(bad());
    }
    let first =
        NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let start = first.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let end =
        crate::meter::period::window_end(qlaud_api::Period::Monthly, start).ok_or_else(bad)?;
    Ok((start, end))
}

const DAY_MS: i64 = 86_400_000;

/// A month's spend as Stripe meter events, one per key and slice.
pub async fn export(
    store: &Store,
    tenant_id: &str,
    period: &str,
    slice: MeterSlice,
) -> Result<MeterExport> {
    let (from, to) = month(period)?;
    let settings = current(store, tenant_id).await?;
    let slice_ms = match slice {
        MeterSlice::Month => to - from,
        MeterSlice::Day => DAY_MS,
    };
    let rows = store.meter_usage(tenant_id, from, to, slice_ms).await?;
    let events = rows
        .into_iter()
        .filter(|r| r.cost_micros > 0)
        .map(|r| {
            let start = from + r.slice * slice_ms;
            let end = (start + slice_ms).min(to);
            let label = match slice {
                MeterSlice::Month => period.to_string(),
                MeterSlice::Day => chrono::DateTime::from_timestamp_millis(start)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            };
            MeterEvent {
                event_name: settings.meter_event_name.clone(),
                payload: MeterEventPayload {
                    stripe_customer_id: r.customer,
                    value: r.cost_micros.to_string(),
                },
                // Deterministic, so re-pushing the same slice is idempotent
                // at Stripe too.
                identifier: format!("qlaud-{tenant_id}-{}-{label}", r.key_id),
                timestamp: end / 1000 - 1,
                key_id: r.key_id,
            }
        })
        .collect();
    Ok(MeterExport { period: period.to_string(), events })
}

/// Invoice lines of a key for a month: one per model and unit, priced from
/// the model's list prices, plus a rounding line so the total equals the
/// sum of the per-request charges (each rounded up to the micro-dollar).
pub async fn invoice_preview(
    ctx: &Context,
    caller: &Caller,
    key_id: &str,
    period: Option<&str>,
) -> Result<InvoicePreview> {
    ctx.store.get_key(&caller.tenant_id, key_id).await?;
    let period = match period {
        Some(p) => p.to_string(),
        None => chrono::DateTime::from_timestamp_millis(ctx.clock.now_ms())
            .unwrap_or_default()
            .format("%Y-%m")
            .to_string(),
    };
    let (from, to) = month(&period)?;
    let sums = ctx.store.model_sums(&caller.tenant_id, key_id, from, to).await?;
    let mut lines = Vec::new();
    let mut total = 0;
    let mut lines_sum = 0;
    for m in &sums {
        total += m.cost_micros;
        let prices =
            ctx.gateway.catalog.model(&m.model).and_then(|model| model.prices).unwrap_or_default();
        for (unit, &quantity) in &m.units {
            // A unit the model is not priced in (the request count of a
            // model without a per-request fee) costs nothing: no line.
            let Some(price) = prices.get(Unit::named(unit)) else { continue };
            if quantity == 0 {
                continue;
            }
            let amount = i64::try_from(i128::from(quantity) * i128::from(price) / 1_000_000)
                .unwrap_or(i64::MAX);
            lines_sum += amount;
            lines.push(InvoiceLine {
                model: m.model.clone(),
                unit: unit.clone(),
                quantity,
                unit_price_per_million_usd: Usd::from_micros(price)
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                amount_micros: amount,
            });
        }
    }
    if total != lines_sum {
        lines.push(InvoiceLine {
            model: "rounding".into(),
            unit: "micro_dollars".into(),
            quantity: total - lines_sum,
            unit_price_per_million_usd: "0".into(),
            amount_micros: total - lines_sum,
        });
    }
    Ok(InvoicePreview { key_id: key_id.to_string(), period, lines, total_micros: total })
}
