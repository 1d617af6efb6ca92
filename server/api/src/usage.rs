//! Wire types of the usage report.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which requests a usage report covers.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct UsageQuery {
    /// Start, inclusive: an RFC 3339 time or a `YYYY-MM-DD` date (UTC).
    /// Default: the start of the current calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub from: Option<String>,
    /// End, exclusive: an RFC 3339 time or a `YYYY-MM-DD` date (UTC).
    /// Default: the start of the next calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub to: Option<String>,
    /// Only this key. A standard key always sees only itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub key_id: Option<String>,
}

/// The window a report covers.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct UsagePeriod {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
}

/// Sums over a set of requests.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct UsageTotals {
    /// What the requests cost, in micro-dollars (1 USD = 1000000).
    pub cost_micros: i64,
    /// Model requests, failed ones included (they cost nothing).
    pub requests: i64,
    /// Input tokens billed at the input price.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: i64,
    /// Quantity per priced unit (`input_tokens`, `output_tokens`,
    /// `cache_read_tokens`, `cache_write_tokens`, `requests`, and any unit
    /// a model is priced in, such as `audio_seconds`). The token fields above
    /// repeat the token units, for readers written before units existed.
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, i64>,
}

/// One key's usage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyUsage {
    /// The key's id.
    pub key_id: String,
    /// The key's name.
    pub key_name: String,
    /// Its sums.
    #[serde(flatten)]
    pub usage: UsageTotals,
}

/// One model's usage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ModelUsage {
    /// The model's public name.
    pub model: String,
    /// Its sums.
    #[serde(flatten)]
    pub usage: UsageTotals,
}

/// One UTC day's usage.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct DayUsage {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Its sums.
    #[serde(flatten)]
    pub usage: UsageTotals,
}

/// Spend per key, model and day, ready to bill.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct UsageReport {
    /// The window covered.
    pub period: UsagePeriod,
    /// Everything in the window.
    pub totals: UsageTotals,
    /// Per key, most expensive first.
    pub by_key: Vec<KeyUsage>,
    /// Per model, most expensive first.
    pub by_model: Vec<ModelUsage>,
    /// Per UTC day, oldest first.
    pub by_day: Vec<DayUsage>,
    /// Per UTC day and model, oldest day first (for charts stacked by
    /// model).
    pub by_day_and_model: Vec<DayModelUsage>,
}

/// One model's usage on one UTC day.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct DayModelUsage {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The model's public name.
    pub model: String,
    /// Its sums.
    #[serde(flatten)]
    pub usage: UsageTotals,
}
