//! OpenAI's Chat Completions API (and services that speak it).

pub mod convert;

use bytes::Bytes;
use serde_json::Value;

use crate::config::{Model, Prices};
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};

/// The upstream request for `body` (already in OpenAI's shape).
pub fn request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let provider = &model.provider;
    let key = provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(502, format!("provider {} has no API key configured", provider.name))
    })?;
    Ok(http
        .post(format!("{}/chat/completions", provider.base_url))
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

/// Reads usage off a passing stream. qlaud always asks the provider for the
/// final usage chunk; the client sees it (with `cost_micros`) only if it
/// asked for it too.
pub struct StreamTap {
    pub usage: Option<Usage>,
    chunks: u64,
    prompt_estimate: u64,
    client_wants_usage: bool,
    public_model: String,
    rename_model: bool,
    /// `"model":"<upstream id>"` and its replacement, for renaming chunks
    /// without parsing them.
    model_bytes: (Vec<u8>, Vec<u8>),
    prices: Prices,
}

impl StreamTap {
    pub fn new(model: &Model, client_wants_usage: bool, prompt_estimate: u64) -> StreamTap {
        StreamTap {
            usage: None,
            chunks: 0,
            prompt_estimate,
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
    /// one (a stream cut short) the prompt estimate and a token per chunk.
    pub fn final_usage(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            input_tokens: self.prompt_estimate,
            output_tokens: self.chunks,
            ..Default::default()
        })
    }

    /// What to send the client for one upstream event, if anything.
    pub fn on_event(&mut self, raw: Bytes) -> Option<Bytes> {
        // Only chunks with a usage object are parsed; the rest pass as they are.
        let has_usage = memchr_usage(&raw);
        if !has_usage {
            if raw.starts_with(b"data: {") {
                self.chunks += 1;
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
