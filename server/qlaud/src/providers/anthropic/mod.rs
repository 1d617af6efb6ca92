//! Anthropic's Messages API.

pub mod convert;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::config::{Model, Prices};
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Unreported, Usage, cost_micros};
use crate::providers::ir::{self, Completion};
use crate::providers::{ChatProvider, StreamDecoder};

/// Anthropic's Messages API for translated calls.
pub struct Anthropic;

impl ChatProvider for Anthropic {
    fn body(&self, req: &ir::Request, model: &Model) -> Value {
        convert::body(req, &model.upstream)
    }

    fn set_max_tokens(&self, body: &mut Value, max_tokens: u64) {
        body["max_tokens"] = max_tokens.into();
    }

    fn post(
        &self,
        http: &reqwest::Client,
        model: &Model,
        client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        request(http, model, client_headers, body)
    }

    fn completion(&self, answer: &Value) -> Completion {
        convert::completion(answer)
    }

    fn decoder(&self) -> StreamDecoder {
        let mut decoder = convert::Decoder::default();
        Box::new(move |raw| decoder.decode(raw))
    }
}

/// The API version sent when the client sent none.
const DEFAULT_VERSION: &str = "2023-06-01";

/// The upstream request for `body` (already in Anthropic's shape).
pub fn request(
    http: &reqwest::Client,
    model: &Model,
    client_headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    post(http, model, client_headers, "/v1/messages", body)
}

/// A POST of `body` to `path` of the provider's API, with qlaud's key and
/// the client's `anthropic-version` and `anthropic-beta` headers.
pub fn post(
    http: &reqwest::Client,
    model: &Model,
    client_headers: &HeaderMap,
    path: &str,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let provider = &model.provider;
    let key = provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(
            502,
            format!("provider {} has no API key configured (ANTHROPIC_API_KEY)", provider.name),
        )
    })?;
    let version = client_headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_VERSION);
    let mut req = http
        .post(format!("{}{path}", provider.base_url))
        .header("x-api-key", key)
        .header("anthropic-version", version)
        .header("content-type", "application/json")
        .body(body);
    if let Some(beta) = client_headers.get("anthropic-beta") {
        req = req.header("anthropic-beta", beta);
    }
    Ok(req)
}

/// Usage from a `usage` object of a message or stream event.
pub fn usage(u: &Value) -> Usage {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cache_read_input_tokens"),
        cache_write_tokens: n("cache_creation_input_tokens"),
    }
}

/// Applies a `message_delta` event's usage to what `message_start` said.
/// Its counts are cumulative: the latest replaces, never adds. Both readers
/// of Anthropic streams (this module's pass-through tap and the translating
/// decoder) use it, so they agree on every count, cache tokens included.
pub fn merge_delta_usage(usage: &mut Usage, u: &Value) {
    for (field, slot) in [
        ("input_tokens", &mut usage.input_tokens),
        ("output_tokens", &mut usage.output_tokens),
        ("cache_read_input_tokens", &mut usage.cache_read_tokens),
        ("cache_creation_input_tokens", &mut usage.cache_write_tokens),
    ] {
        if let Some(n) = u[field].as_u64() {
            *slot = n;
        }
    }
}

/// The output tokens one `content_block_delta` can stand for: the bytes of
/// its text, tool-input JSON or thinking (no tokenizer emits more tokens
/// than bytes; at least one per delta).
pub fn delta_tokens(data: &str) -> u64 {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        delta: Delta<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        text: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        partial_json: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        thinking: Option<std::borrow::Cow<'a, str>>,
    }
    let len = |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().map_or(0, |s| s.len() as u64);
    match serde_json::from_str::<Event<'_>>(data) {
        Ok(e) => (len(&e.delta.text) + len(&e.delta.partial_json) + len(&e.delta.thinking)).max(1),
        // Unreadable: everything in it could have been output.
        Err(_) => data.len() as u64,
    }
}

/// Reads usage off a passing stream and adds qlaud's cost to the final
/// usage event; every other event goes through byte for byte.
pub struct StreamTap {
    pub usage: Usage,
    /// Whether `message_start` reported the input counts.
    input_seen: bool,
    /// How the stream is billed where the provider's counts are missing.
    unreported: Unreported,
    /// Output the content deltas can stand for: the floor for output tokens
    /// when a stream ends before the provider's final count.
    seen_output: u64,
    /// The output count of `message_delta`, once seen.
    final_output: Option<u64>,
    public_model: String,
    rename_model: bool,
    prices: Prices,
}

impl StreamTap {
    pub fn new(model: &Model, unreported: Unreported) -> StreamTap {
        StreamTap {
            usage: Usage::default(),
            input_seen: false,
            unreported,
            seen_output: 0,
            final_output: None,
            public_model: model.name.clone(),
            rename_model: model.name != model.upstream,
            prices: model.prices.unwrap_or_default(),
        }
    }

    /// Usage as far as the stream went: the provider's final count, or for
    /// a stream cut before it (or a provider that reports none), the
    /// reserved prompt bound for input it never counted and what the
    /// content deltas can stand for as output (`message_start` carries
    /// only a placeholder output count).
    pub fn final_usage(&self) -> Usage {
        let input = self.input_seen.then_some(self.usage);
        match self.final_output {
            Some(output) => Usage { output_tokens: output, ..self.unreported.usage(input, 0) },
            None => self.unreported.usage(input, self.seen_output),
        }
    }

    fn cost(&self) -> i64 {
        cost_micros(&self.prices, &self.final_usage())
    }

    /// What to send the client for one upstream event.
    pub fn on_event(&mut self, raw: Bytes) -> Bytes {
        let (name, data) = sse::parse(&raw);
        match name {
            Some("content_block_delta") => {
                self.seen_output += delta_tokens(&data);
                raw
            }
            Some("message_start") => {
                let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
                    return raw;
                };
                let u = &v["message"]["usage"];
                self.input_seen = u.is_object();
                self.usage = usage(u);
                if self.rename_model {
                    v["message"]["model"] = Value::String(self.public_model.clone());
                    return sse::event(Some("message_start"), &v.to_string());
                }
                raw
            }
            Some("message_delta") => {
                let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
                    return raw;
                };
                // Counts here are cumulative: take the latest, never add.
                let u = &v["usage"];
                if u.get("input_tokens").is_some() {
                    self.input_seen = true;
                }
                if let Some(out) = u["output_tokens"].as_u64() {
                    self.final_output = Some(out);
                }
                merge_delta_usage(&mut self.usage, u);
                if let Some(obj) = v["usage"].as_object_mut() {
                    obj.insert("cost_micros".into(), self.cost().into());
                }
                sse::event(Some("message_delta"), &v.to_string())
            }
            _ => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{ModelKind, Provider, ProviderKind};
    use crate::meter::Unreported;
    use crate::providers::ir::Event;

    fn model() -> Model {
        let provider = Provider {
            name: "anthropic".into(),
            kind: ProviderKind::Anthropic,
            base_url: "http://127.0.0.1:9".into(),
            api_key: None,
            timeout: std::time::Duration::from_secs(1),
        };
        Model {
            name: "claude".into(),
            display_name: "Claude".into(),
            upstream: "claude".into(),
            kind: ModelKind::Chat,
            provider: Arc::new(provider),
            max_output_tokens: 100,
            context_window: 1000,
            prices: None,
            credits_per_character_millionths: 1_000_000,
            fallbacks: Vec::new(),
            retries: 0,
        }
    }

    /// The pass-through tap and the translating decoder read the same
    /// stream to the same usage, cache counts from `message_delta` included.
    #[test]
    fn both_readers_agree_on_every_count() {
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\
             \"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"cache_read_input_tokens\":0,\
             \"cache_creation_input_tokens\":0}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
             \"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\
             \"end_turn\"},\"usage\":{\"output_tokens\":5,\"cache_read_input_tokens\":7,\
             \"cache_creation_input_tokens\":3}}\n\n",
        ];
        let mut tap = StreamTap::new(&model(), Unreported::default());
        let mut decoder = convert::Decoder::default();
        let mut decoded = None;
        for e in events {
            tap.on_event(Bytes::from(e));
            for ev in decoder.decode(e.as_bytes()) {
                if let Event::Usage(u) = ev {
                    decoded = Some(u);
                }
            }
        }
        let expected = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 7,
            cache_write_tokens: 3,
        };
        assert_eq!(tap.final_usage(), expected);
        assert_eq!(decoded, Some(expected));
    }
}
