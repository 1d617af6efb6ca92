//! Wire types of the drop-in endpoints the official clients call besides
//! messages and chat completions: Anthropic's token counting
//! (`POST /v1/messages/count_tokens`) and the model lookup both clients
//! share (`GET /v1/models/{model_id}`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A request to `POST /v1/messages/count_tokens`, in Anthropic's shape: what
/// a `POST /v1/messages` request would send, without the output limit.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MessageTokensRequest {
    /// The model's public name in qlaud (see `GET /v1/models`).
    pub model: String,
    /// The conversation: `{role, content}` objects as in Anthropic's API
    /// (text, image, document, tool_use and tool_result blocks).
    pub messages: Vec<Value>,
    /// The system prompt: a string or an array of text blocks (which may
    /// carry `cache_control`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
    /// Tool definitions (`{name, description, input_schema}` or typed
    /// server tools), as in `POST /v1/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// How the model may use the tools, as in `POST /v1/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Extended thinking settings, as in `POST /v1/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    /// Any other Anthropic parameter (`mcp_servers`, `context_management`,
    /// …), passed to the provider unchanged for Claude models.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer of `POST /v1/messages/count_tokens`: `{"input_tokens": N}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MessageTokensCount {
    /// The input tokens the request would be billed for: the provider's own
    /// count for Claude models, an estimate by the model family's tokenizer
    /// for the others.
    pub input_tokens: u64,
    /// Other fields of the provider's answer (such as
    /// `context_management`), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The path of `GET /v1/models/{model_id}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ModelPath {
    /// The model's public name, as `GET /v1/models` lists it.
    #[serde(deserialize_with = "crate::text::plain")]
    pub model_id: String,
}
