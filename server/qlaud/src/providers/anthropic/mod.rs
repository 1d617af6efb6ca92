//! Anthropic's Messages API.

pub mod convert;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::config::{Model, Prices};
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};

/// The API version sent when the client sent none.
const DEFAULT_VERSION: &str = "2023-06-01";

/// The upstream request for `body` (already in Anthropic's shape).
pub fn request(
    http: &reqwest::Client,
    model: &Model,
    client_headers: &HeaderMap,
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
        .post(format!("{}/v1/messages", provider.base_url))
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

/// Reads usage off a passing stream and adds qlaud's cost to the final
/// usage event; every other event goes through byte for byte.
pub struct StreamTap {
    pub usage: Usage,
    /// Content deltas seen: the floor for output tokens when a stream ends
    /// before the provider's final count.
    deltas: u64,
    /// The output count of `message_delta`, once seen.
    final_output: Option<u64>,
    public_model: String,
    rename_model: bool,
    prices: Prices,
}

impl StreamTap {
    pub fn new(model: &Model) -> StreamTap {
        StreamTap {
            usage: Usage::default(),
            deltas: 0,
            final_output: None,
            public_model: model.name.clone(),
            rename_model: model.name != model.upstream,
            prices: model.prices.unwrap_or_default(),
        }
    }

    /// Usage as far as the stream went: the provider's final count, or for
    /// a stream cut before it, the content deltas that came through
    /// (`message_start` carries only a placeholder output count).
    pub fn final_usage(&self) -> Usage {
        let mut u = self.usage;
        u.output_tokens = self.final_output.unwrap_or(self.deltas);
        u
    }

    fn cost(&self) -> i64 {
        cost_micros(&self.prices, &self.final_usage())
    }

    /// What to send the client for one upstream event.
    pub fn on_event(&mut self, raw: Bytes) -> Bytes {
        let (name, data) = sse::parse(&raw);
        match name {
            Some("content_block_delta") => {
                self.deltas += 1;
                raw
            }
            Some("message_start") => {
                let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
                    return raw;
                };
                self.usage = usage(&v["message"]["usage"]);
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
                if let Some(out) = u["output_tokens"].as_u64() {
                    self.usage.output_tokens = out;
                    self.final_output = Some(out);
                }
                for (field, slot) in [
                    ("input_tokens", &mut self.usage.input_tokens),
                    ("cache_read_input_tokens", &mut self.usage.cache_read_tokens),
                    ("cache_creation_input_tokens", &mut self.usage.cache_write_tokens),
                ] {
                    if let Some(n) = u[field].as_u64() {
                        *slot = n;
                    }
                }
                if let Some(obj) = v["usage"].as_object_mut() {
                    obj.insert("cost_micros".into(), self.cost().into());
                }
                sse::event(Some("message_delta"), &v.to_string())
            }
            _ => raw,
        }
    }
}
