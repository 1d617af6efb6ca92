//! Wire types of the key endpoints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::money::Usd;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// The tenant's own key: manages keys and billing settings, and reads
    /// all of the tenant's usage.
    Admin,
    /// One end user's key: calls models and sees only its own usage.
    Standard,
}

/// The window a spend cap applies to. Windows follow UTC calendar
/// boundaries: a `monthly` cap resets at 00:00 UTC on the first of the month,
/// `weekly` at 00:00 UTC on Monday, `daily` at 00:00 UTC; `total` never resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Resets at 00:00 UTC on the first day of each month.
    #[default]
    Monthly,
    /// Resets at 00:00 UTC each Monday.
    Weekly,
    /// Resets at 00:00 UTC each day.
    Daily,
    /// Never resets: a lifetime budget.
    Total,
}

/// Whether a key can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// The key authenticates and may call models within its cap.
    Active,
    /// The tenant disabled the key (`disabled: true`); it can be enabled again.
    Disabled,
    /// The key was revoked; it never authenticates again.
    Revoked,
    /// Its customer's payment failed (a Stripe webhook said so): model
    /// calls get 402 until the invoice is paid.
    Suspended,
}

/// Parameters for minting a key.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintKeyRequest {
    /// A name for the key, usually your own id for the end user
    /// (1 to 200 characters, no control characters).
    pub name: String,
    /// Hard spend cap per period in US dollars. Omit for no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend_usd: Option<Usd>,
    /// The window the cap applies to; `monthly` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Free-form string pairs kept with the key, such as
    /// `stripe_customer_id` (at most 50 pairs; keys up to 40 characters,
    /// values up to 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// At most this many model requests per minute (a window of 60 s
    /// from the full minute), across every qlaud process; the 61st request
    /// of a 60 RPM minute gets 429 with `retry-after`. Omit for the
    /// tenant's default from `qlaud.toml` (none unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_minute: Option<u64>,
    /// At most this many tokens per minute, counted as each request's
    /// reserved worst case (prompt bound plus output limit) at admission and
    /// corrected to what the provider reported at settlement. Omit for the
    /// tenant's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_minute: Option<u64>,
    /// `standard` (default) for an end user; `admin` for another key with the
    /// tenant's full powers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<KeyScope>,
}

/// Changes to a key. Fields left out stay as they are.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// A new name (1 to 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new spend cap in US dollars. Takes effect at once, for the current
    /// period too. To remove the cap use `remove_max_spend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend_usd: Option<Usd>,
    /// `true` removes the spend cap. Cannot be combined with `max_spend_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_max_spend: Option<bool>,
    /// A new cap window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Replaces all metadata (same limits as at mint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `true` stops the key from authenticating until set back to `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// A new requests-per-minute limit; takes effect at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_minute: Option<u64>,
    /// A new tokens-per-minute limit; takes effect at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_minute: Option<u64>,
    /// `true` removes the key's own rate limits (the tenant's defaults from
    /// `qlaud.toml` apply again). Cannot be combined with setting them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_rate_limits: Option<bool>,
}

/// A key as qlaud shows it after minting: everything but the secret.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Key {
    /// Stable identifier; stays the same when the secret is rotated.
    pub id: String,
    /// The key's name.
    pub name: String,
    /// What the key may do.
    pub scope: KeyScope,
    /// Whether the key can be used now.
    pub status: KeyStatus,
    /// Hard spend cap per period in US dollars, or null for none.
    pub max_spend_usd: Option<Usd>,
    /// The same cap in integer micro-dollars (1 USD = 1000000), or null.
    pub max_spend_micros: Option<i64>,
    /// The window the cap applies to.
    pub period: Period,
    /// The key's own requests-per-minute limit, or null (the tenant's
    /// default from `qlaud.toml` applies, if any).
    pub max_requests_per_minute: Option<u64>,
    /// The key's own tokens-per-minute limit, or null.
    pub max_tokens_per_minute: Option<u64>,
    /// The key's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Whether the tenant disabled the key.
    pub disabled: bool,
    /// The start and end of the secret, to tell keys apart
    /// (`qlk_live_AbC…xYz1`); the whole secret is never shown again.
    pub secret_hint: String,
    /// When the key was minted.
    pub created_at: DateTime<Utc>,
    /// When the key last changed.
    pub updated_at: DateTime<Utc>,
    /// When the secret was last rotated, if ever.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Since when the key is suspended for a failed payment, if it is.
    pub suspended_at: Option<DateTime<Utc>>,
    /// When the key last made a model request (as recorded in the request
    /// log), or null if it never has.
    pub last_used_at: Option<DateTime<Utc>>,
    /// What the key has spent in its current cap window (`period`), in
    /// micro-dollars: the figure its cap is compared with.
    pub spend_micros: i64,
}

/// A key together with its secret: answered only by mint and rotate.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyWithSecret {
    /// The secret (`qlk_live_…`). Shown only now: store it, qlaud keeps only
    /// a hash.
    pub secret: String,
    /// The key.
    #[serde(flatten)]
    pub key: Key,
}

/// Path parameters naming one key.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyPath {
    /// The key's id (`key_…`).
    #[serde(deserialize_with = "crate::text::plain")]
    pub key_id: String,
}

/// Filters and order for listing keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct KeyListFilter {
    /// Include revoked keys (default false).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub include_revoked: Option<bool>,
    /// Only keys whose name contains this text (case-insensitive), or whose
    /// id is exactly this (at most 100 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub search: Option<String>,
    /// The order: `created_at` (default), `name`, `last_used_at` or
    /// `spend` (in the key's current cap window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<KeySort>,
    /// `asc` (default) or `desc`. Ties are broken by id; keys never used
    /// sort before used ones in ascending `last_used_at` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<SortDirection>,
}

/// What keys are ordered by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeySort {
    /// When the key was minted.
    #[default]
    CreatedAt,
    /// The key's name, case-insensitive.
    Name,
    /// When the key last made a model request.
    LastUsedAt,
    /// Spend in the key's current cap window.
    Spend,
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortDirection {
    /// Smallest, earliest or A first.
    #[default]
    Asc,
    /// Largest, latest or Z first.
    Desc,
}

/// Where a page of keys continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyPageSelector {
    /// Filters of the first page.
    pub include_revoked: bool,
    /// Search text of the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Order of the first page.
    pub sort: KeySort,
    /// Direction of the first page.
    pub direction: SortDirection,
    /// The sort value of the last key seen, for numeric orders (Unix ms or
    /// micro-dollars).
    pub after_value: i64,
    /// `id` of the last key seen.
    pub id: String,
}

// Query strings carry `true`/`false` as text; accept `1`/`0` too.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref() {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => {
            Err(serde::de::Error::custom(format!("expected true or false, got {other:?}")))
        }
    }
}
