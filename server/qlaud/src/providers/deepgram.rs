//! Deepgram: pre-recorded speech to text (`POST /v1/listen`, raw audio or
//! `{url}` JSON in, JSON out), authenticated with `Authorization: Token`.
//! Usage is the audio's `metadata.duration` (seconds) and `channels`.

use bytes::Bytes;
use serde_json::Value;

use crate::config::Model;
use crate::gateway::error::GatewayError;

/// The upstream request: `query` (the client's, with the model's upstream
/// id in `model`) and the body as it came.
pub fn listen_request(
    http: &reqwest::Client,
    model: &Model,
    query: &str,
    content_type: &str,
    body: Bytes,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let provider = &model.provider;
    let key = provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(502, format!("provider {} has no API key configured", provider.name))
    })?;
    Ok(http
        .post(format!("{}/v1/listen?{query}", provider.base_url))
        .header("authorization", format!("Token {key}"))
        .header("content-type", content_type)
        .body(body))
}

/// Seconds of audio × channels the answer reports, rounded up to whole
/// seconds.
pub fn billed_seconds(answer: &Value) -> Option<u64> {
    let meta = &answer["metadata"];
    let duration = meta["duration"].as_f64()?;
    let channels = meta["channels"].as_u64().unwrap_or(1).max(1);
    Some((duration * channels as f64).ceil() as u64)
}
