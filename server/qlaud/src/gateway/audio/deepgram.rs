//! `POST /v1/listen`: Deepgram's pre-recorded transcription. Raw audio in
//! the body (its duration read from the file bounds the bill), or JSON
//! `{url}` (bounded by the configured maximum length). Settled from the
//! answer's `metadata.duration` × `metadata.channels`.

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use serde_json::Value;

use super::{AUDIO_SECONDS, admit, put};
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::gateway::error::GatewayError;
use crate::media::{duration, upload};
use crate::meter::Endpoint;
use crate::providers::deepgram;
use crate::units::{Quantities, Unit};

/// Deepgram's model when a request names none.
const DEFAULT_MODEL: &str = "nova-3";
/// Channels reserved for audio qlaud cannot see (a URL) when the request
/// asks for each channel separately.
const URL_CHANNELS: u64 = 8;

pub async fn listen(
    ctx: &Context,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let limits = ctx.gateway.catalog.media;
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let name = params
        .iter()
        .find(|(k, _)| k == "model")
        .map_or(DEFAULT_MODEL.to_string(), |(_, v)| v.clone());
    let model = ctx.gateway.model(&name, ModelKind::Transcription)?;
    if model.provider.kind != ProviderKind::Deepgram {
        return Err(GatewayError::bad_request(format!(
            "model {:?} is served through /v1/audio/transcriptions (OpenAI's API)",
            model.name
        )));
    }
    let multichannel = params.iter().any(|(k, v)| k == "multichannel" && v == "true");
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let bytes = upload::read(body, headers, limits.max_upload_bytes).await?;
    let seconds = if content_type.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
        if !v["url"].is_string() {
            return Err(GatewayError::bad_request("a JSON body must be {\"url\": …}"));
        }
        let channels = if multichannel { URL_CHANNELS } else { 1 };
        limits.max_audio_seconds.saturating_mul(channels)
    } else {
        let audio = duration::read(bytes.clone(), None, limits.max_audio_seconds)
            .map_err(GatewayError::bad_request)?;
        let channels = if multichannel { u64::from(audio.channels) } else { 1 };
        (audio.seconds * channels as f64).ceil() as u64
    };
    let unit = Unit::named(AUDIO_SECONDS);
    let mut worst = Quantities::default();
    put(&mut worst, &model, unit, seconds);
    let estimate = super::estimate(0, worst);
    let mut call = admit(ctx, caller, model.clone(), Endpoint::Listen, started, &estimate).await?;
    for (k, v) in params.iter_mut() {
        if k == "model" {
            *v = model.upstream.clone();
        }
    }
    if !params.iter().any(|(k, _)| k == "model") {
        params.push(("model".into(), model.upstream.clone()));
    }
    let query: String =
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
    let client = ctx.gateway.client(&model);
    let http = deepgram::listen_request(client, &model, &query, &content_type, bytes)?;
    let upstream = crate::gateway::send(&mut call, http).await?;
    let answer = super::read_body(&call, upstream).await?;
    let v: Value = serde_json::from_slice(&answer).map_err(|e| {
        GatewayError::new(502, format!("provider {} sent invalid JSON: {e}", model.provider.name))
    })?;
    let mut used = Quantities::default();
    put(&mut used, &model, unit, deepgram::billed_seconds(&v).unwrap_or(seconds));
    let cost = call.metered.settle_units(200, used).await;
    Ok(crate::gateway::json_response(&call, &v, cost))
}
