//! Wire types of the request log: one entry per model request, for support
//! disputes ("what did this user's $4 buy?") and the console.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Filters for the request log. Every filter is optional; together they
/// narrow the log.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct RequestLogFilter {
    /// Only this key's requests. A standard key always sees only itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub key_id: Option<String>,
    /// Only this model (its public name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub model: Option<String>,
    /// Only this HTTP status (`200`, `429`) or class of statuses (`2xx`,
    /// `4xx`, `5xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub status: Option<String>,
    /// From this time, inclusive: an RFC 3339 time or a `YYYY-MM-DD` date
    /// (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub from: Option<String>,
    /// Before this time, exclusive: an RFC 3339 time or a `YYYY-MM-DD` date
    /// (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub to: Option<String>,
}

/// Where a page of the request log continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct RequestLogPageSelector {
    /// The filters of the first page.
    pub filter: RequestLogFilter,
    /// Time of the last entry seen, Unix ms.
    pub created_ms: i64,
    /// Id of the last entry seen.
    pub id: String,
}

/// One model request as qlaud settled it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct RequestLogEntry {
    /// The request's id (the id of its reservation in the ledger).
    pub id: String,
    /// The key that made (and paid for) the request.
    pub key_id: String,
    /// That key's name.
    pub key_name: String,
    /// The model's public name, as the client asked for it.
    pub model: String,
    /// What was called: `messages` (`/v1/messages`), `chat_completions`,
    /// `responses`, `embeddings` (also a search's query), `threads` (a
    /// model round of a thread turn), `audio_transcriptions`,
    /// `audio_translations`, `audio_speech`, `listen`, `text_to_speech`,
    /// `videos`, or `turn_embeddings` (the search index embedding the
    /// thread owner's turns; no HTTP request of its own).
    pub endpoint: String,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// The HTTP status qlaud answered with (or the provider's, passed on).
    pub status: u16,
    /// Input tokens billed at the input price.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: i64,
    /// What the request cost the key, in micro-dollars.
    pub cost_micros: i64,
    /// Time from receiving the request to its end, in milliseconds.
    pub latency_ms: i64,
    /// When the request arrived.
    pub created_at: DateTime<Utc>,
    /// True when crash recovery settled the request at its reserved
    /// (worst-case) amount because its process died before reading usage.
    pub recovered: bool,
}
