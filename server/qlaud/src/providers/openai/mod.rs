//! OpenAI's Chat Completions API (and services that speak it), and its
//! Responses and Embeddings endpoints for pass-through.

pub mod convert;
pub mod responses;

use bytes::Bytes;
use serde_json::Value;

use http::HeaderMap;

use crate::config::{Model, Prices};
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Unreported, Usage, cost_micros};
use crate::providers::ir::{self, Completion};
use crate::providers::{ChatProvider, StreamDecoder};

/// OpenAI's Chat Completions API (or a service speaking it) for translated
/// calls.
pub struct OpenAi {
    /// Whether the output limit goes in `max_tokens` (services that speak
    /// the older field) rather than `max_completion_tokens` (OpenAI).
    legacy_limit: bool,
}

pub static OPENAI: OpenAi = OpenAi { legacy_limit: false };
pub static COMPATIBLE: OpenAi = OpenAi { legacy_limit: true };

impl ChatProvider for OpenAi {
    fn body(&self, req: &ir::Request, model: &Model) -> Value {
        convert::body(req, &model.upstream, self.legacy_limit)
    }

    fn set_max_tokens(&self, body: &mut Value, max_tokens: u64) {
        convert::set_max_tokens(body, max_tokens, self.legacy_limit);
    }

    fn post(
        &self,
        http: &reqwest::Client,
        model: &Model,
        _client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        request(http, model, body)
    }

    fn completion(&self, answer: &Value) -> Completion {
        convert::completion(answer)
    }

    fn decoder(&self) -> StreamDecoder {
        let mut decoder = convert::Decoder::default();
        Box::new(move |raw| decoder.decode(raw))
    }
}

/// The upstream chat request for `body` (already in OpenAI's shape).
pub fn request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    post(http, model, "chat/completions", body)
}

/// The upstream embeddings request for `body` (already in OpenAI's shape).
pub fn embeddings_request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    post(http, model, "embeddings", body)
}

/// The upstream request for `body` to the provider's own Responses API.
pub fn responses_request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    post(http, model, "responses", body)
}

/// A JSON POST to `path` under the provider's base URL, with its key as a
/// bearer token (OpenAI and the services that follow its auth).
pub(crate) fn post(
    http: &reqwest::Client,
    model: &Model,
    path: &str,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let provider = &model.provider;
    let key = provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(502, format!("provider {} has no API key configured", provider.name))
    })?;
    Ok(http
        .post(format!("{}/{path}", provider.base_url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body))
}

/// Usage from an OpenAI `usage` object. Cached tokens are counted inside
/// `prompt_tokens`; qlaud bills them at the cache-read price instead.
pub fn usage(u: &Value) -> Usage {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0).min(prompt);
    Usage {
        input_tokens: prompt - cached,
        output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    }
}

/// Usage from a Responses API `usage` object. Like chat usage, cached
/// tokens are counted inside `input_tokens` (OpenAI names them
/// `cached_tokens`, Perplexity `cache_read_input_tokens`).
pub fn responses_usage(u: &Value) -> Usage {
    let input = u["input_tokens"].as_u64().unwrap_or(0);
    let details = &u["input_tokens_details"];
    let cached = details["cached_tokens"]
        .as_u64()
        .or_else(|| details["cache_read_input_tokens"].as_u64())
        .unwrap_or(0)
        .min(input);
    Usage {
        input_tokens: input - cached,
        output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    }
}

/// The output tokens one stream chunk can stand for: the bytes of the text,
/// refusal, reasoning and tool-call names and arguments of every choice in
/// it (no tokenizer emits more tokens than bytes; at least one per chunk
/// that carries any). `data` is the chunk's JSON.
pub fn chunk_tokens(data: &[u8]) -> u64 {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        delta: Option<Delta<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        refusal: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        reasoning_content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        reasoning: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow, default)]
        function: Option<Function<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Function<'a> {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        arguments: Option<Cow<'a, str>>,
    }
    let len = |s: &Option<Cow<'_, str>>| s.as_ref().map_or(0, |s| s.len() as u64);
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        // Unreadable: everything in it could have been output.
        return data.len() as u64;
    };
    chunk
        .choices
        .iter()
        .filter_map(|c| c.delta.as_ref())
        .map(|d| {
            let calls: u64 = d
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|c| c.function.as_ref())
                .map(|f| len(&f.name) + len(&f.arguments))
                .sum();
            let n = len(&d.content)
                + len(&d.refusal)
                + len(&d.reasoning_content)
                + len(&d.reasoning)
                + calls;
            let carries = d.content.as_ref().is_some_and(|c| !c.is_empty())
                || d.tool_calls.is_some()
                || d.refusal.is_some();
            n.max(u64::from(carries))
        })
        .sum()
}

/// Reads usage off a passing stream. qlaud always asks the provider for the
/// final usage chunk; the client sees it (with `cost_micros`) only if it
/// asked for it too.
pub struct StreamTap {
    pub usage: Option<Usage>,
    /// Output the chunks can stand for, for a stream without a usage chunk.
    seen_output: u64,
    /// How the stream is billed when the provider never reports usage (a
    /// stream cut before its last chunk).
    unreported: Unreported,
    client_wants_usage: bool,
    public_model: String,
    rename_model: bool,
    /// `"model":"<upstream id>"` and its replacement, for renaming chunks
    /// without parsing them.
    model_bytes: (Vec<u8>, Vec<u8>),
    prices: Prices,
}

impl StreamTap {
    pub fn new(model: &Model, client_wants_usage: bool, unreported: Unreported) -> StreamTap {
        StreamTap {
            usage: None,
            seen_output: 0,
            unreported,
            client_wants_usage,
            public_model: model.name.clone(),
            rename_model: model.name != model.upstream,
            model_bytes: (
                format!("\"model\":{}", Value::String(model.upstream.clone())).into_bytes(),
                format!("\"model\":{}", Value::String(model.name.clone())).into_bytes(),
            ),
            prices: model.prices.unwrap_or_default(),
        }
    }

    /// Usage as far as the stream went: the provider's count, or without
    /// one (a stream cut short, a provider that reports none) the reserved
    /// prompt bound and what the chunks can stand for.
    pub fn final_usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| self.unreported.usage(None, self.seen_output))
    }

    /// What to send the client for one upstream event, if anything.
    pub fn on_event(&mut self, raw: Bytes) -> Option<Bytes> {
        // Only chunks with a usage object are parsed; the rest pass as they are.
        let has_usage = memchr_usage(&raw);
        if !has_usage {
            if let Some(data) = raw.strip_prefix(b"data: ").filter(|d| d.starts_with(b"{")) {
                self.seen_output += chunk_tokens(data);
            }
            if !self.rename_model {
                return Some(raw);
            }
            if let Some(renamed) = replace_once(&raw, &self.model_bytes.0, &self.model_bytes.1) {
                return Some(renamed);
            }
        }
        let (_, data) = sse::parse(&raw);
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            return Some(raw);
        };
        if self.rename_model && v.get("model").is_some() {
            v["model"] = Value::String(self.public_model.clone());
        }
        if v["usage"].is_object() {
            // A usage chunk may carry content too.
            if let Some(data) = raw.strip_prefix(b"data: ") {
                self.seen_output += chunk_tokens(data);
            }
            let u = usage(&v["usage"]);
            self.usage = Some(u);
            let cost = cost_micros(&self.prices, &u);
            v["usage"]["cost_micros"] = cost.into();
            let only_usage = v["choices"].as_array().is_none_or(|c| c.is_empty());
            if only_usage && !self.client_wants_usage {
                return None;
            }
            if !self.client_wants_usage {
                // Usage rode on a content chunk: keep the chunk, drop usage.
                v.as_object_mut().map(|o| o.remove("usage"));
            }
        }
        Some(sse::event(None, &v.to_string()))
    }
}

/// `haystack` with the first `from` replaced by `to`, if there is one.
fn replace_once(haystack: &[u8], from: &[u8], to: &[u8]) -> Option<Bytes> {
    let at = haystack.windows(from.len()).position(|w| w == from)?;
    let mut out = Vec::with_capacity(haystack.len() + to.len() - from.len().min(to.len()));
    out.extend_from_slice(&haystack[..at]);
    out.extend_from_slice(to);
    out.extend_from_slice(&haystack[at + from.len()..]);
    Some(Bytes::from(out))
}

/// Whether a chunk carries a usage object (not `"usage": null`), found
/// without parsing the chunk.
fn memchr_usage(raw: &[u8]) -> bool {
    let key = b"\"usage\"";
    let mut i = 0;
    while let Some(pos) = raw[i..].windows(key.len()).position(|w| w == key) {
        let rest = &raw[i + pos + key.len()..];
        let mut it = rest.iter().copied().skip_while(|b| b.is_ascii_whitespace());
        if it.next() == Some(b':') && it.find(|b| !b.is_ascii_whitespace()) == Some(b'{') {
            return true;
        }
        i += pos + key.len();
    }
    false
}

/// The upstream audio request (`audio/transcriptions`, `audio/translations`)
/// carrying `form`.
pub fn audio_form_request(
    http: &reqwest::Client,
    model: &Model,
    path: &str,
    form: reqwest::multipart::Form,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let key = api_key(model)?;
    Ok(http.post(format!("{}/{path}", model.provider.base_url)).bearer_auth(key).multipart(form))
}

/// The upstream `audio/speech` request for `body` (OpenAI's shape).
pub fn speech_request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    post(http, model, "audio/speech", body)
}

fn api_key(model: &Model) -> Result<&str, GatewayError> {
    let provider = &model.provider;
    provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(502, format!("provider {} has no API key configured", provider.name))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_usage_objects_only() {
        assert!(super::memchr_usage(br#"data: {"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(super::memchr_usage(br#"data: {"usage" : {"a":1}}"#));
        assert!(!super::memchr_usage(br#"data: {"choices":[{}],"usage":null}"#));
        assert!(!super::memchr_usage(br#"data: {"content":"usage"}"#));
    }
}
