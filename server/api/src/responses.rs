//! Wire types of `POST /v1/responses`, OpenAI's Responses API as qlaud
//! serves it for any model.
//!
//! Only the fields qlaud reads are typed; every other field is kept in
//! `extra` and passes through to the provider untouched on calls to GPT
//! models, so new provider parameters need no qlaud release.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A request to `POST /v1/responses`, in OpenAI's Responses API shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ResponsesRequest {
    /// The model's public name in qlaud (see `GET /v1/models`).
    pub model: String,
    /// The input: a string (one user message) or an array of items —
    /// messages (`{role, content}` with `input_text` / `input_image`
    /// parts), `function_call` and `function_call_output` items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// A system (developer) message placed before the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<Value>,
    /// Tools the model may call: `{type: "function", name, description,
    /// parameters, strict}`. Hosted tools (web search, file search, code
    /// interpreter, …) are refused: their per-call fees are not priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or `{type: "function", name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// The most tokens the answer may have, reasoning included. qlaud fills
    /// in the model's limit when it is left out, and lowers it to what the
    /// key's budget pays for (header `qlaud-max-tokens-clamped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Output format: `{format: {type: "text" | "json_object" |
    /// "json_schema", name, schema, strict}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    /// `true` answers with server-sent events (`response.created`, …,
    /// `response.completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Whether qlaud keeps the response (default true, as OpenAI): its
    /// input and output items go into a thread under its `resp_…` id, so
    /// `get_response` answers it and a later request can chain from it with
    /// `previous_response_id`. `false` keeps nothing (except, with
    /// `conversation`, the items added to that conversation). The provider
    /// is always called with `store: false`: qlaud keeps the state, for
    /// every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Continue from a stored response: qlaud sends that response's
    /// conversation (its chain's input and output items) before `input`,
    /// and the new response joins the same chain. `instructions` are not
    /// carried over. A response the key does not reach (another key's,
    /// another tenant's, deleted, or made with `store: false`) is 404 with
    /// code `previous_response_not_found`. Cannot be combined with
    /// `conversation` (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// A conversation (`"<id>"` or `{"id": "<id>"}`; a conversation is a
    /// thread, see `create_conversation`): its items are sent before
    /// `input`, and the input and output items are added to it once the
    /// response completes. An unknown conversation is 404 with code
    /// `conversation_not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    /// Reasoning options (`{effort, summary}`), passed to GPT models;
    /// dropped when the model is translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Value>,
    /// Any other Responses API parameter (temperature, metadata, …),
    /// passed to GPT models unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of a Responses API answer, with qlaud's cost.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ResponsesUsage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// The sum of both.
    pub total_tokens: u64,
    /// What qlaud charged the key for this request, in micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    /// Other usage fields (`input_tokens_details.cached_tokens`,
    /// `output_tokens_details.reasoning_tokens`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An answer of `POST /v1/responses`, in OpenAI's Responses API shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ResponseObject {
    /// The answer's id (`resp_…`).
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Unix seconds (as the provider wrote them: usually a whole number).
    pub created_at: serde_json::Number,
    /// `completed`, or `incomplete` when the output limit cut it (see
    /// `incomplete_details.reason`).
    #[serde(default)]
    pub status: Option<String>,
    /// The model's public name.
    pub model: String,
    /// Output items: `message` (with `output_text` parts),
    /// `function_call`, `reasoning`, …
    pub output: Vec<Value>,
    /// Token counts and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponsesUsage>,
    /// Other fields of the answer, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Path parameters naming one stored response.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ResponsePath {
    /// The response's id (`resp_…`).
    pub response_id: String,
}

/// The answer of `delete_response`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ResponseDeleted {
    /// The deleted response's id.
    pub id: String,
    /// Always `response.deleted`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}
