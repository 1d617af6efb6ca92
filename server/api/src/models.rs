//! Wire types of the model endpoints: Anthropic's Messages API and OpenAI's
//! Chat Completions API, as qlaud serves them.
//!
//! Only the fields qlaud reads are typed; every other field is kept in
//! `extra` and passes through to the provider untouched, so new provider
//! parameters need no qlaud release.

use std::marker::PhantomData;

use dropshot::{ApiEndpointResponse, Body, HttpError, HttpResponse, HttpResponseOk};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body limit of the model endpoints: room for several base64 images.
pub const MODEL_BODY_MAX_BYTES: usize = 32 * 1024 * 1024;

/// A request to `POST /v1/messages`, in Anthropic's Messages API shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct MessagesRequest {
    /// The model's public name in qlaud (see `GET /v1/models`).
    pub model: String,
    /// The conversation: `{role, content}` objects as in Anthropic's API.
    pub messages: Vec<Value>,
    /// The most tokens the answer may have. Optional here (unlike Anthropic's
    /// API): qlaud fills in the model's limit when it is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The system prompt: a string or an array of text blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
    /// `true` answers with server-sent events instead of one JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Any other Anthropic parameter (tools, temperature, metadata, …),
    /// passed to the provider unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of an Anthropic-shaped answer, with qlaud's cost.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct MessagesUsage {
    /// Input tokens not read from or written to the prompt cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// What qlaud charged the key for this request, in micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    /// Other usage fields of the provider, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An answer of `POST /v1/messages`, in Anthropic's Messages API shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Message {
    /// The answer's id.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `assistant`.
    pub role: String,
    /// The model's public name.
    pub model: String,
    /// Content blocks (`text`, `tool_use`, …).
    pub content: Vec<Value>,
    /// Why the answer ended: `end_turn`, `max_tokens`, `stop_sequence`,
    /// `tool_use`, …
    pub stop_reason: Option<String>,
    /// The stop sequence that ended the answer, if one did.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Token counts and cost.
    pub usage: MessagesUsage,
    /// Other fields of the provider's answer, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A request to `POST /v1/chat/completions`, in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ChatCompletionRequest {
    /// The model's public name in qlaud (see `GET /v1/models`).
    pub model: String,
    /// The conversation: `{role, content, …}` objects as in OpenAI's API.
    pub messages: Vec<Value>,
    /// `true` answers with server-sent events (`data: …` chunks, then
    /// `data: [DONE]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// The most tokens the answer may have (older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The most tokens the answer may have, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Any other OpenAI parameter (tools, temperature, stream_options, …),
    /// passed to the provider unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of an OpenAI-shaped answer, with qlaud's cost.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ChatUsage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// The sum of both.
    pub total_tokens: u64,
    /// What qlaud charged the key for this request, in micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    /// Other usage fields (`prompt_tokens_details`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An answer of `POST /v1/chat/completions`, in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ChatCompletion {
    /// The answer's id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model's public name.
    pub model: String,
    /// The answers (`{index, message, finish_reason}`).
    pub choices: Vec<Value>,
    /// Token counts and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ChatUsage>,
    /// Other fields of the provider's answer, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Prices of a model in US dollars per million units.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ModelPricing {
    /// Per million input tokens.
    pub input_per_mtok_usd: crate::Usd,
    /// Per million output tokens.
    pub output_per_mtok_usd: crate::Usd,
    /// Per million input tokens read from the prompt cache.
    pub cache_read_per_mtok_usd: crate::Usd,
    /// Per million input tokens written to the prompt cache.
    pub cache_write_per_mtok_usd: crate::Usd,
    /// Every unit the model is priced in, in US dollars per million units:
    /// the token units above (`input_tokens`, `output_tokens`,
    /// `cache_read_tokens`, `cache_write_tokens`) and any other, such as
    /// `requests` (a per-request fee) or `audio_seconds`.
    pub units: std::collections::BTreeMap<String, crate::Usd>,
}

/// A model qlaud serves, in a shape both the OpenAI and Anthropic clients
/// read.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ModelInfo {
    /// The model's public name; use it as `model` in requests.
    pub id: String,
    /// Always `model` (OpenAI's field).
    pub object: String,
    /// Always `model` (Anthropic's field).
    #[serde(rename = "type")]
    pub kind: String,
    /// A human-readable name.
    pub display_name: String,
    /// Unix seconds (OpenAI's field); when the model was added to qlaud's
    /// catalogue.
    pub created: i64,
    /// RFC 3339 time (Anthropic's field), the same instant as `created`.
    pub created_at: String,
    /// The provider that serves it.
    pub owned_by: String,
    /// The most output tokens one answer may have.
    pub max_output_tokens: u64,
    /// The most input tokens the model reads. qlaud never reserves more
    /// input than this for one request, and a request carrying an
    /// attachment whose size it cannot see (a PDF or file by URL) reserves
    /// this much.
    pub context_window: u64,
    /// What qlaud charges for it.
    pub pricing: ModelPricing,
}

/// The models a key may call.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelInfo>,
    /// Always false: every model is on one page.
    pub has_more: bool,
    /// The first model's id.
    pub first_id: Option<String>,
    /// The last model's id.
    pub last_id: Option<String>,
}

/// The answer of a model endpoint: one JSON object (typed as `T` in the
/// spec) or, when the request asked to stream, server-sent events.
pub struct ModelResponse<T> {
    response: http::Response<Body>,
    _body: PhantomData<fn() -> T>,
}

impl<T> ModelResponse<T> {
    /// Wraps a response built by the gateway (JSON or `text/event-stream`).
    pub fn new(response: http::Response<Body>) -> ModelResponse<T> {
        ModelResponse { response, _body: PhantomData }
    }
}

impl<T> HttpResponse for ModelResponse<T>
where
    T: JsonSchema + Serialize + Send + Sync + 'static,
{
    fn to_result(self) -> Result<http::Response<Body>, HttpError> {
        Ok(self.response)
    }

    fn response_metadata() -> ApiEndpointResponse {
        <HttpResponseOk<T> as HttpResponse>::response_metadata()
    }

    fn status_code(&self) -> http::StatusCode {
        self.response.status()
    }
}

/// A request to `POST /v1/embeddings`, in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct EmbeddingRequest {
    /// An embedding model's public name in qlaud (see `GET /v1/models`).
    pub model: String,
    /// What to embed: a string, an array of strings, or token arrays.
    pub input: Value,
    /// `float` (default) or `base64` (packed little-endian 32-bit floats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Fewer dimensions than the model's own, where the model supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u64>,
    /// An end-user id passed to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Any other provider parameter, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of an embeddings answer, with qlaud's cost.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// The same as `prompt_tokens`: embeddings have no output tokens.
    pub total_tokens: u64,
    /// What qlaud charged the key for this request, in micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
}

/// An answer of `POST /v1/embeddings`, in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: String,
    /// One `{object: "embedding", index, embedding}` per input, where
    /// `embedding` is an array of floats or a base64 string.
    pub data: Vec<Value>,
    /// The model's public name.
    pub model: String,
    /// Token counts and cost.
    pub usage: EmbeddingUsage,
    /// Other fields of the provider's answer, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
