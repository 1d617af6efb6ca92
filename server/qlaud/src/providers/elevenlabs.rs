//! ElevenLabs: text to speech (`POST /v1/text-to-speech/{voice_id}`,
//! binary audio out), authenticated with `xi-api-key`. What a call cost
//! comes back in the `character-cost` header (its credits).

use http::HeaderMap;

use crate::config::Model;
use crate::gateway::error::GatewayError;

/// The upstream request for `body` to `voice_id`, with the client's query
/// (`output_format`, …) passed through.
pub fn speech_request(
    http: &reqwest::Client,
    model: &Model,
    voice_id: &str,
    stream: bool,
    query: Option<&str>,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let provider = &model.provider;
    let key = provider.api_key.as_deref().ok_or_else(|| {
        GatewayError::new(502, format!("provider {} has no API key configured", provider.name))
    })?;
    let voice: String = url::form_urlencoded::byte_serialize(voice_id.as_bytes()).collect();
    let mut url = format!("{}/v1/text-to-speech/{voice}", provider.base_url);
    if stream {
        url.push_str("/stream");
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    Ok(http
        .post(url)
        .header("xi-api-key", key)
        .header("content-type", "application/json")
        .body(body))
}

/// The credits a call cost, from its `character-cost` header.
pub fn character_cost(headers: &HeaderMap) -> Option<u64> {
    headers.get("character-cost")?.to_str().ok()?.trim().parse().ok()
}
