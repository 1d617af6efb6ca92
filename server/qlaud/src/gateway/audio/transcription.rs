//! `POST /v1/audio/transcriptions` and `/translations`: OpenAI's multipart
//! upload. `whisper-1` bills audio seconds (`usage.seconds`); the
//! `gpt-4o-*-transcribe` models bill text and audio input tokens and
//! output tokens (`usage.input_token_details`, `usage.output_tokens`).

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use serde_json::Value;

use super::{AUDIO_INPUT_TOKENS, AUDIO_SECONDS, AUDIO_TOKENS_PER_SECOND, admit, put};
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::gateway::error::GatewayError;
use crate::media::{duration, upload};
use crate::meter::Endpoint;
use crate::meter::estimate::{self, PromptBound};
use crate::providers::openai;
use crate::units::{Quantities, Unit};

pub async fn transcription(
    ctx: &Context,
    headers: &HeaderMap,
    body: Body,
    translation: bool,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    // The key first: nothing of the body is read for a caller without one.
    let caller = ctx.authenticate(headers).await?;
    let limits = ctx.gateway.catalog.media;
    let bytes = upload::read(body, headers, limits.max_upload_bytes).await?;
    let parts = upload::multipart(headers, bytes).await?;
    let text = |name: &str| parts.iter().find(|p| p.name == name).and_then(|p| p.text());
    let model_name = text("model").ok_or_else(|| GatewayError::bad_request("model is required"))?;
    let model = ctx.gateway.model(model_name, ModelKind::Transcription)?;
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        return Err(GatewayError::bad_request(format!(
            "model {:?} is served through /v1/listen (Deepgram's API)",
            model.name
        )));
    }
    if text("stream").is_some_and(|s| s.trim() == "true") {
        return Err(GatewayError::bad_request(
            "streamed transcriptions are not supported yet; leave stream unset",
        ));
    }
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.file_name.is_some())
        .ok_or_else(|| GatewayError::bad_request("file is required: the audio as a file part"))?;
    let audio =
        duration::read(file.data.clone(), file.file_name.as_deref(), limits.max_audio_seconds)
            .map_err(GatewayError::bad_request)?;

    // The worst case: the file's seconds, or the audio tokens they can be
    // plus the text the request carries and the model's output limit.
    let mut prompt = PromptBound::default();
    for p in parts.iter().filter(|p| p.name != "file" && p.name != "model") {
        prompt.text_field(&p.name, p.text().unwrap_or_default());
    }
    let token_billed = model.prices.is_some_and(|p| p.get(Unit::INPUT_TOKENS).is_some());
    let prompt_tokens = if token_billed { prompt.finish(model.context_window) } else { 0 };
    let mut worst = Quantities::default();
    put(&mut worst, &model, Unit::named(AUDIO_SECONDS), audio.whole_seconds());
    let audio_tokens = audio.whole_seconds().saturating_mul(AUDIO_TOKENS_PER_SECOND);
    put(&mut worst, &model, Unit::named(AUDIO_INPUT_TOKENS), audio_tokens);
    put(&mut worst, &model, Unit::OUTPUT_TOKENS, model.max_output_tokens);
    let endpoint = if translation { Endpoint::Translations } else { Endpoint::Transcriptions };
    let mut call = admit(
        ctx,
        caller,
        model.clone(),
        endpoint,
        started,
        &super::estimate(prompt_tokens, worst),
    )
    .await?;

    let mut form = reqwest::multipart::Form::new();
    for p in &parts {
        let part = if p.name == "model" {
            reqwest::multipart::Part::text(model.upstream.clone())
        } else {
            let mut part = reqwest::multipart::Part::bytes(p.data.to_vec());
            if let Some(f) = &p.file_name {
                part = part.file_name(f.clone());
            }
            if let Some(ct) = &p.content_type {
                part = part.mime_str(ct).map_err(|e| GatewayError::bad_request(e.to_string()))?;
            }
            part
        };
        form = form.part(p.name.clone(), part);
    }
    let path = if translation { "audio/translations" } else { "audio/transcriptions" };
    let http = openai::audio_form_request(ctx.gateway.client(&model), &model, path, form)?;
    let upstream = crate::gateway::send(&mut call, http).await?;
    let content_type = upstream
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let answer = super::read_body(&call, upstream).await?;
    let json: Option<Value> = content_type
        .starts_with("application/json")
        .then(|| serde_json::from_slice(&answer).ok())
        .flatten();

    // What the provider reports, else the request's own measure: the
    // file's seconds (or its audio-token bound and the prompt's), and the
    // transcript's bytes as output tokens.
    let mut used = Quantities::default();
    let usage = json.as_ref().map(|v| &v["usage"]).filter(|u| u.is_object());
    match usage {
        Some(u) if u["type"] == "duration" => {
            let secs = u["seconds"].as_f64().unwrap_or(0.0).ceil() as u64;
            put(&mut used, &model, Unit::named(AUDIO_SECONDS), secs);
        }
        Some(u) => {
            let details = &u["input_token_details"];
            let input = u["input_tokens"].as_u64().unwrap_or(0);
            let audio_in = details["audio_tokens"].as_u64().unwrap_or(0).min(input);
            let text_in = details["text_tokens"].as_u64().unwrap_or(input - audio_in);
            put(&mut used, &model, Unit::INPUT_TOKENS, text_in);
            put(&mut used, &model, Unit::named(AUDIO_INPUT_TOKENS), audio_in);
            put(&mut used, &model, Unit::OUTPUT_TOKENS, u["output_tokens"].as_u64().unwrap_or(0));
        }
        None => {
            used = worst;
            put(&mut used, &model, Unit::INPUT_TOKENS, prompt_tokens);
            let seen = match &json {
                Some(v) => estimate::text_tokens(&v["text"]),
                None => answer.len() as u64,
            };
            put(&mut used, &model, Unit::OUTPUT_TOKENS, seen.min(model.max_output_tokens));
        }
    }
    let cost = call.metered.settle_units(200, used).await;
    match json {
        Some(mut v) => {
            if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
                u.insert("cost_micros".into(), cost.into());
            }
            Ok(crate::gateway::json_response(&call, &v, cost))
        }
        None => Ok(super::text_response(&content_type, answer, cost)),
    }
}
