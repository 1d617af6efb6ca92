//! Wire types of the tool endpoints: webhook tools a tenant registers once,
//! which thread turns may name and qlaud then runs by calling the webhook.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::SortDirection;

/// Body limit of `create_tool`: room for the largest schema and
/// description together.
pub const TOOL_BODY_MAX_BYTES: usize = 128 * 1024;

/// The longest tool name, in characters (Anthropic's and OpenAI's limit).
pub const MAX_TOOL_NAME_CHARS: usize = 64;

/// The longest tool description, in bytes of UTF-8. Long enough for the
/// multi-paragraph descriptions agents give their tools, small enough to
/// send with every turn.
pub const MAX_TOOL_DESCRIPTION_BYTES: usize = 16 * 1024;

/// The largest input schema, in bytes of compact JSON.
pub const MAX_TOOL_SCHEMA_BYTES: usize = 64 * 1024;

/// The longest webhook URL, in bytes.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2000;

/// The webhook timeout when a tool names none, in seconds.
pub const DEFAULT_TOOL_TIMEOUT_SECS: u32 = 30;

/// The longest webhook timeout a tool may have, in seconds.
pub const MAX_TOOL_TIMEOUT_SECS: u32 = 300;

/// Parameters for registering a tool.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToolRequest {
    /// The name the model calls the tool by: 1 to 64 ASCII letters, digits,
    /// `_` or `-` (the rule of both Anthropic and OpenAI), unique within
    /// the tenant (case-sensitive).
    pub name: String,
    /// What the tool does and when to use it, as the model will read it
    /// (1 to 16 KiB of UTF-8; not only whitespace).
    pub description: String,
    /// A JSON Schema of the tool's input: a valid schema (draft 2020-12
    /// unless `$schema` names another published draft) whose top-level
    /// `type` is `"object"`, at most 64 KiB as compact JSON. `$ref` may
    /// only point inside the schema: qlaud never fetches schemas.
    pub input_schema: Map<String, Value>,
    /// Where qlaud posts the tool's calls: an `https://` URL of at most
    /// 2000 bytes (plain `http://` only to `127.0.0.1` or `localhost`).
    pub webhook_url: String,
    /// How long qlaud waits for the webhook's answer, 1 to 300 seconds;
    /// 30 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

/// A registered tool.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Tool {
    /// The tool's id (`tool_…`).
    pub id: String,
    /// Always `tool`.
    pub object: String,
    /// The name the model calls the tool by, unique within the tenant.
    pub name: String,
    /// What the tool does, as the model reads it.
    pub description: String,
    /// The JSON Schema of the tool's input.
    pub input_schema: Map<String, Value>,
    /// Where qlaud posts the tool's calls.
    pub webhook_url: String,
    /// How long qlaud waits for the webhook's answer, in seconds.
    pub timeout_secs: u32,
    /// When the tool was registered.
    pub created_at: DateTime<Utc>,
    /// When the tool last changed (tools cannot be changed yet, so this is
    /// its registration time).
    pub updated_at: DateTime<Utc>,
}

/// The answer of `delete_tool`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ToolDeleted {
    /// The deleted tool's id.
    pub id: String,
    /// Always `tool.deleted`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// Path parameters naming one tool.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ToolPath {
    /// The tool's id (`tool_…`).
    #[serde(deserialize_with = "crate::text::plain")]
    pub tool_id: String,
}

/// Order and bounds for listing tools.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ToolListFilter {
    /// `desc` (default: newest first) or `asc` (oldest first), by
    /// registration time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortDirection>,
    /// Only tools registered after this tool (an id from an earlier
    /// listing), whatever the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only tools registered before this tool (an id from an earlier
    /// listing), whatever the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// A tool's place in the listing order (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ToolCursor {
    /// Registration time, Unix ms.
    pub created_ms: i64,
    /// The tool's id.
    pub id: String,
}

/// Where a page of tools continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ToolPageSelector {
    /// The order of the first page.
    pub order: SortDirection,
    /// Tools after this one come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ToolCursor>,
    /// Tools before this one come next (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ToolCursor>,
}
