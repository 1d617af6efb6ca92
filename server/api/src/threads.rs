//! Wire types of the thread endpoints: server-side conversations whose
//! messages qlaud stores in a provider-neutral form (Anthropic content
//! blocks), so one thread can move between Claude and GPT models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::SortDirection;
use crate::models::MessagesUsage;

/// Body limit of the thread endpoints: a system prompt may take up to
/// [`MAX_SYSTEM_PROMPT_BYTES`].
pub const THREAD_BODY_MAX_BYTES: usize = 512 * 1024;

/// The longest system prompt a thread keeps, in bytes of UTF-8.
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 256 * 1024;

/// What a turn does when the thread's history no longer fits the model's
/// context window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Refuse the turn with 400 (as OpenAI's Responses API does by default).
    #[default]
    Disabled,
    /// Drop the oldest turns until the history fits; never the system
    /// prompt, never one half of a tool call and its result.
    Auto,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    /// The end user (or the caller's tool results).
    User,
    /// The model.
    Assistant,
}

/// Parameters for creating a thread.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateThreadRequest {
    /// Free-form string pairs kept with the thread (at most 50 pairs; keys
    /// up to 40 characters, values up to 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The system prompt every turn of the thread is sent with (at most
    /// 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The model turns use when they name none: a chat model of
    /// `GET /v1/models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What turns do when the history outgrows the model's context window;
    /// `disabled` when omitted. A turn may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    /// The key that owns the thread (and pays for its turns). Only an admin
    /// key may name another key of its tenant; by default the thread
    /// belongs to the key that creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Changes to a thread. Fields left out stay as they are.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateThreadRequest {
    /// Replaces all metadata (same limits as at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// A new system prompt (at most 256 KiB); an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A new default model; an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A new default truncation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
}

/// A thread: a conversation qlaud keeps, owned by one key.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Thread {
    /// The thread's id (`thr_…`).
    pub id: String,
    /// Always `thread`.
    pub object: String,
    /// The key that owns the thread and pays for its turns.
    pub key_id: String,
    /// The thread's metadata.
    pub metadata: BTreeMap<String, String>,
    /// The system prompt, or null for none.
    pub system: Option<String>,
    /// The default model of its turns, or null for none.
    pub model: Option<String>,
    /// The default truncation of its turns.
    pub truncation: Truncation,
    /// When the thread was created.
    pub created_at: DateTime<Utc>,
    /// When the thread's settings or messages last changed.
    pub updated_at: DateTime<Utc>,
}

/// The answer of `delete_thread`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadDeleted {
    /// The deleted thread's id.
    pub id: String,
    /// Always `thread.deleted`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// One message of a thread, in a provider-neutral form.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadMessage {
    /// The message's id (`msg_…`).
    pub id: String,
    /// Always `thread.message`.
    pub object: String,
    /// The thread it belongs to.
    pub thread_id: String,
    /// Who wrote it.
    pub role: MessageRole,
    /// Anthropic content blocks: `text`, `image`, `tool_use`,
    /// `tool_result`, whatever model wrote or read them.
    pub content: Vec<Value>,
    /// The model that wrote an assistant message; null for user messages.
    pub model: Option<String>,
    /// Why an assistant message ended (`end_turn`, `max_tokens`,
    /// `tool_use`, `spend_cap_reached`, …); null for user messages.
    pub stop_reason: Option<String>,
    /// Tokens and cost (`cost_micros`) of an assistant message; null for
    /// user messages.
    pub usage: Option<MessagesUsage>,
    /// The message's metadata.
    pub metadata: BTreeMap<String, String>,
    /// When the message was stored.
    pub created_at: DateTime<Utc>,
}

/// The most model rounds one turn may run (each round answers the tool
/// results of the one before).
pub const MAX_TOOL_ROUNDS: u32 = 32;

/// A new turn of a thread: only the user's new message; qlaud adds the
/// history it holds.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateThreadMessageRequest {
    /// The user's message: a string, or Anthropic content blocks (`text`,
    /// `image`, and `tool_result` answering a client-side tool call of the
    /// previous turn).
    pub content: Value,
    /// The model that answers: any chat model of `GET /v1/models`, Claude
    /// or GPT alike. The thread's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tools the model may call: the names of the tenant's registered tools
    /// (qlaud calls their webhooks and feeds the results back), the string
    /// `"all"` for every registered tool, and client-side tool definitions
    /// (`{name, description, input_schema}` as in Anthropic's API, or
    /// `{type: "function", function: {…}}` as in OpenAI's), whose calls end
    /// the turn with `stop_reason: "tool_use"` for the caller to answer in
    /// the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// The most model rounds the turn runs while the model calls registered
    /// tools (default 8, at most 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_rounds: Option<u32>,
    /// The most tokens each answer may have; the model's limit when
    /// omitted (and never above it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// `true` answers with server-sent events in Anthropic's message-event
    /// form (`message_start` … `message_stop` per model round), with
    /// `tool_execution.started` and `tool_execution.completed` events
    /// between rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// What to do when the history outgrows the model's context window;
    /// the thread's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    /// Free-form string pairs kept with the user's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Path parameters naming one thread.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadPath {
    /// The thread's id (`thr_…`).
    #[serde(deserialize_with = "crate::text::plain")]
    pub thread_id: String,
}

/// Filters and order for listing threads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ThreadListFilter {
    /// Only this key's threads. Admin keys only: a standard key always
    /// sees only its own threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::text::plain_opt")]
    pub key_id: Option<String>,
    /// `desc` (default: newest first) or `asc` (oldest first), by creation
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortDirection>,
    /// Only threads created after this thread (an id from an earlier
    /// listing), whatever the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only threads created before this thread (an id from an earlier
    /// listing), whatever the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// A thread's place in the listing order (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadCursor {
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// The thread's id.
    pub id: String,
}

/// Where a page of threads continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadPageSelector {
    /// The key filter of the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The order of the first page.
    pub order: SortDirection,
    /// Threads after this one come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ThreadCursor>,
    /// Threads before this one come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ThreadCursor>,
}

/// Order and bounds for listing a thread's messages.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ThreadMessageListFilter {
    /// `desc` (default: newest first) or `asc` (oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortDirection>,
    /// Only messages after this message of the thread, whatever the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only messages before this message of the thread, whatever the
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// Where a page of messages continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ThreadMessagePageSelector {
    /// The order of the first page.
    pub order: SortDirection,
    /// Messages after this position come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<i64>,
    /// Messages before this position come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<i64>,
}
