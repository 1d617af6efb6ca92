//! `POST /v1/text-to-speech/{voice_id}[/stream]`: ElevenLabs' text to
//! speech. Billed in characters (ElevenLabs' credits): reserved as the
//! text's length × the model's credits per character, settled from the
//! provider's `character-cost` header.

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::{ElevenLabsSpeechRequest, ModelBody};

use super::{CHARACTERS, admit, put};
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::gateway::error::GatewayError;
use crate::meter::Endpoint;
use crate::providers::elevenlabs;
use crate::units::{Quantities, Unit};

/// ElevenLabs' model when a request names none.
const DEFAULT_MODEL: &str = "eleven_multilingual_v2";

#[allow(clippy::too_many_arguments)]
pub async fn speech(
    ctx: &Context,
    headers: &HeaderMap,
    voice_id: &str,
    query: Option<&str>,
    body: ModelBody<ElevenLabsSpeechRequest>,
    stream: bool,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let mut req = body.read().await?;
    let name = req.model_id.clone().unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let model = ctx.gateway.model(&name, ModelKind::Speech)?;
    if model.provider.kind != ProviderKind::Elevenlabs {
        return Err(GatewayError::bad_request(format!(
            "model {:?} is served through /v1/audio/speech (OpenAI's API)",
            model.name
        )));
    }
    if req.text.is_empty() {
        return Err(GatewayError::bad_request("text must not be empty"));
    }
    req.model_id = Some(model.upstream.clone());
    let body = crate::gateway::to_vec(&req)?;
    let chars = req.text.chars().count() as u64;
    let credits = chars.saturating_mul(model.credits_per_character_millionths).div_ceil(1_000_000);
    let character = Unit::named(CHARACTERS);
    let mut worst = Quantities::default();
    put(&mut worst, &model, character, credits);
    let estimate = super::estimate(0, worst);
    let mut call =
        admit(ctx, caller, model.clone(), Endpoint::TextToSpeech, started, &estimate).await?;
    let client = ctx.gateway.client(&model);
    let http = elevenlabs::speech_request(client, &model, voice_id, stream, query, body)?;
    let upstream = crate::gateway::send(&mut call, http).await?;
    // The provider's own figure; without one, the request's measure.
    let billed = elevenlabs::character_cost(upstream.headers()).unwrap_or(credits);
    let mut used = Quantities::default();
    put(&mut used, &model, character, billed);
    let cost = call.metered.settle_units(200, used).await;
    let echo = [("character-cost", billed.to_string())];
    Ok(super::binary_response(&call, upstream, cost, &echo))
}
