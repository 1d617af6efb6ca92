//! Wire types of semantic search over thread turns, and of deleting a
//! key's data.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::threads::MessageRole;

/// The most hits one search returns.
pub const MAX_SEARCH_LIMIT: u32 = 100;

/// The longest query, in bytes of UTF-8 (the model reads its first 256
/// tokens).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Body limit of `search`: a query and its filters.
pub const SEARCH_BODY_MAX_BYTES: usize = 16 * 1024;

/// Options of `revoke_key`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct RevokeKeyQuery {
    /// Also delete the key's data, as `delete_key_data` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge: Option<bool>,
}

/// A search over the thread turns the caller may read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Plain text; matched by meaning, not by words (at most 8 KiB).
    pub query: String,
    /// How many hits, 1 to 100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only this thread's turns (one the caller may read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub thread_id: Option<String>,
    /// Only the threads of this key of the tenant. Admin keys only: a
    /// standard key naming another key gets 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub key_id: Option<String>,
    /// Only turns by this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<MessageRole>,
    /// Only turns stored at or after this time: RFC 3339 or `YYYY-MM-DD`
    /// (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub from: Option<String>,
    /// Only turns stored before this time: RFC 3339 or `YYYY-MM-DD` (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub to: Option<String>,
}

/// One turn that matched.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct SearchHit {
    pub thread_id: String,
    pub message_id: String,
    pub role: MessageRole,
    /// The turn's text (its text blocks; tool calls and results are not
    /// indexed).
    pub text: String,
    /// Cosine similarity of the query and the turn, -1 to 1 (higher is
    /// closer).
    pub score: f64,
    /// When the turn was stored.
    pub created_at: DateTime<Utc>,
}

/// The answer of `search`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct SearchResults {
    /// Always `list`.
    pub object: String,
    /// Best first.
    pub data: Vec<SearchHit>,
    /// The embedding model that embedded the query and the turns.
    pub model: String,
}

/// What `delete_key_data` removed.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct KeyDataDeleted {
    /// The key whose data was deleted.
    pub key_id: String,
    /// Threads deleted (with their messages and search vectors).
    pub threads: u64,
    /// Messages deleted.
    pub messages: u64,
    /// Jobs deleted (with their results).
    pub jobs: u64,
}
