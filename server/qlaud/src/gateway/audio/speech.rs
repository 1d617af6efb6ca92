//! `POST /v1/audio/speech`: OpenAI's text to speech, binary audio out.
//! `tts-1` and `tts-1-hd` bill the input's characters (exact before the
//! call); `gpt-4o-mini-tts` bills text input tokens and audio output
//! tokens, which a binary answer does not report: it is settled at its
//! bound (the text's bytes, the model's output limit).

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::{ModelBody, SpeechRequest};

use super::{AUDIO_OUTPUT_TOKENS, CHARACTERS, admit, put};
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::gateway::error::GatewayError;
use crate::meter::Endpoint;
use crate::meter::estimate::PromptBound;
use crate::providers::openai;
use crate::units::{Quantities, Unit};

pub async fn speech(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<SpeechRequest>,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let mut req = body.read().await?;
    let model = ctx.gateway.model(&req.model, ModelKind::Speech)?;
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        return Err(GatewayError::bad_request(format!(
            "model {:?} is served through /v1/text-to-speech/{{voice_id}} (ElevenLabs' API)",
            model.name
        )));
    }
    if req.input.is_empty() {
        return Err(GatewayError::bad_request("input must not be empty"));
    }
    if req.extra.get("stream_format").and_then(|v| v.as_str()).is_some_and(|f| f != "audio") {
        return Err(GatewayError::bad_request(
            "stream_format \"sse\" is not supported yet; the audio streams as it is made",
        ));
    }
    req.model = model.upstream.clone();
    let body = crate::gateway::to_vec(&req)?;
    let mut worst = Quantities::default();
    put(&mut worst, &model, Unit::named(CHARACTERS), req.input.chars().count() as u64);
    put(&mut worst, &model, Unit::named(AUDIO_OUTPUT_TOKENS), model.max_output_tokens);
    let token_billed = model.prices.is_some_and(|p| p.get(Unit::INPUT_TOKENS).is_some());
    let prompt_tokens = if token_billed {
        let mut bound = PromptBound::default();
        bound.text_field("input", &req.input);
        bound.fields(&req.extra);
        bound.finish(model.context_window)
    } else {
        0
    };
    let estimate = super::estimate(prompt_tokens, worst);
    let mut call = admit(ctx, caller, model.clone(), Endpoint::Speech, started, &estimate).await?;
    let http = openai::speech_request(ctx.gateway.client(&model), &model, body)?;
    let upstream = crate::gateway::send(&mut call, http).await?;
    // Billed in full once the provider starts answering: characters are
    // exact, and an abandoned stream was still made.
    let mut used = worst;
    put(&mut used, &model, Unit::INPUT_TOKENS, prompt_tokens);
    let cost = call.metered.settle_units(200, used).await;
    Ok(super::binary_response(&call, upstream, cost, &[]))
}
