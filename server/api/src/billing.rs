//! Wire types of billing out: Stripe settings, webhooks, meter export and
//! invoice previews.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Changes to the tenant's billing settings; fields left out stay as they
/// are, and an empty string clears one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingSettingsUpdate {
    /// The tenant's Stripe secret key (`sk_live_…` / `sk_test_…`, or a
    /// restricted `rk_…`), used to push meter events. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_secret_key: Option<String>,
    /// The signing secret (`whsec_…`) of the Stripe webhook endpoint that
    /// posts to `/v1/billing/stripe/webhook/{tenant_id}`. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// The `event_name` of the Stripe Billing Meter that sums spend
    /// (default `qlaud_spend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_event_name: Option<String>,
    /// An https URL that receives spend alerts (50 %, 80 %, 100 % of a cap),
    /// signed with Standard Webhooks (see `rotate_webhook_secret`). It must
    /// have no user name or password and must not point at a loopback,
    /// private, link-local, metadata or other special address (unless the
    /// operator runs qlaud with `--allow-private-webhooks`, which also allows
    /// plain http); otherwise the answer is 400 and nothing changes. The
    /// addresses its name resolves to are checked again on every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_webhook_url: Option<String>,
}

/// The tenant's billing settings. Secrets are never returned: only whether
/// they are set.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct BillingSettings {
    /// Whether a Stripe secret key is set.
    pub stripe_secret_key_set: bool,
    /// Whether a webhook signing secret is set.
    pub webhook_secret_set: bool,
    /// The meter's event name.
    pub meter_event_name: String,
    /// Where spend alerts go, if anywhere.
    pub alert_webhook_url: Option<String>,
    /// The path to give Stripe as the webhook endpoint (on qlaud's address).
    pub webhook_path: String,
    /// Deprecated: the secret of the older `qlaud-signature: t=…,v1=…`
    /// header on spend alerts (HMAC-SHA256 of `"{t}.{body}"`, as Stripe
    /// signs), still sent beside the Standard Webhooks headers throughout
    /// qlaud 0.2.x and removed in 0.3.0; verify `webhook-signature` with the
    /// secret from `rotate_webhook_secret` instead. Present only in the
    /// answer that first sets an alert URL: store it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_signing_secret: Option<String>,
    /// Where pushing meter events to Stripe stands.
    pub stripe_push: StripePushState,
}

/// Where pushing meter events to Stripe stands for the tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct StripePushState {
    /// Meter events Stripe has accepted from qlaud, ever.
    pub events_pushed: i64,
    /// Micro-dollars those events carried.
    pub micros_pushed: i64,
    /// When Stripe last accepted an event, if ever.
    pub last_pushed_at: Option<DateTime<Utc>>,
    /// The last push run for this tenant (by `qlaud billing push-stripe` or
    /// the schedule in `qlaud serve`), if any.
    pub last_run: Option<StripePushRun>,
}

/// One push run's outcome for one tenant.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct StripePushRun {
    /// When the run finished.
    pub at: DateTime<Utc>,
    /// The month pushed, `YYYY-MM`.
    pub period: String,
    /// Events Stripe accepted in this run.
    pub sent: i64,
    /// Events skipped because they were pushed before.
    pub already_sent: i64,
    /// Events of slices not over yet (pushed once they close).
    pub still_open: i64,
    /// Events that failed after retries; the next run tries them again.
    pub failed: i64,
}

/// Path parameters of the Stripe webhook.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct TenantPath {
    /// The tenant the webhook belongs to.
    #[serde(deserialize_with = "crate::text::plain")]
    pub tenant_id: String,
}

/// What a Stripe webhook delivery did.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct StripeWebhookResult {
    /// Always true: the event was verified and recorded.
    pub received: bool,
    /// The event id had been received before; nothing was done again.
    pub duplicate: bool,
    /// Keys suspended or reinstated by this event.
    pub keys_changed: u64,
}

/// Which meter events to export.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MeterExportQuery {
    /// The calendar month, `YYYY-MM` (UTC).
    #[serde(deserialize_with = "crate::text::plain")]
    pub period: String,
    /// `month` (default): one event per key for the month; `day`: one per
    /// key and UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<MeterSlice>,
}

/// How finely spend is cut into meter events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeterSlice {
    /// One event per key and month.
    Month,
    /// One event per key and UTC day.
    Day,
}

/// The payload of a Stripe meter event.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MeterEventPayload {
    /// The key's `metadata.stripe_customer_id`.
    pub stripe_customer_id: String,
    /// Spend in the slice, in micro-dollars, as Stripe expects it: a string
    /// holding a whole number. Price the meter at $0.000001 per unit.
    pub value: String,
}

/// One event in Stripe's Billing Meter event form.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MeterEvent {
    /// The meter's event name.
    pub event_name: String,
    /// Customer and value.
    pub payload: MeterEventPayload,
    /// Idempotency key: the same for the same tenant, key and slice, so a
    /// re-push never counts twice.
    pub identifier: String,
    /// Unix seconds: the last second of the slice.
    pub timestamp: i64,
    /// The qlaud key the spend belongs to (not sent to Stripe).
    pub key_id: String,
}

/// A period's meter events.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MeterExport {
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The events, for keys with a `stripe_customer_id` and spend > 0.
    pub events: Vec<MeterEvent>,
}

/// Which invoice to preview.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct InvoicePreviewQuery {
    /// The key.
    #[serde(deserialize_with = "crate::text::plain")]
    pub key_id: String,
    /// The calendar month, `YYYY-MM` (UTC); default: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub period: Option<String>,
}

/// One invoice line.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct InvoiceLine {
    /// The model, or `rounding` for the line that carries per-request
    /// rounding up to the micro-dollar.
    pub model: String,
    /// `input_tokens`, `output_tokens`, `cache_read_tokens`,
    /// `cache_write_tokens`, or `micro_dollars` for rounding.
    pub unit: String,
    /// How many units.
    pub quantity: i64,
    /// Price per million units in US dollars (0 for rounding).
    pub unit_price_per_million_usd: String,
    /// The line's amount in micro-dollars.
    pub amount_micros: i64,
}

/// A key's invoice for a month, line by line.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct InvoicePreview {
    /// The key.
    pub key_id: String,
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// The sum of the lines: equal to `get_usage` for the key and month.
    pub total_micros: i64,
}

/// A suspension or reinstatement of a key by a Stripe event.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyBillingEvent {
    /// The Stripe event's id.
    pub stripe_event_id: String,
    /// The Stripe event's type.
    pub stripe_event_type: String,
    /// The key's billing status before: `active` or `suspended`.
    pub old_status: String,
    /// The key's billing status after.
    pub new_status: String,
    /// When qlaud applied it.
    pub at: DateTime<Utc>,
}
