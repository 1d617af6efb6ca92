//! Audio endpoints in each provider's own wire format: OpenAI's
//! transcriptions, translations and speech, Deepgram's `/v1/listen`,
//! ElevenLabs' text to speech.
//!
//! Each measures the request's worst case in the model's own units (audio
//! seconds from the file, characters from the text, tokens bounded by
//! both), reserves it before the provider is called, and settles from what
//! the provider reports, or the request's own measure where it reports
//! nothing. Binary answers stream to the client as they arrive.

mod deepgram;
mod elevenlabs;
mod speech;
mod transcription;

pub use deepgram::listen;
pub use elevenlabs::speech as elevenlabs_speech;
pub use speech::speech;
pub use transcription::transcription;

use std::time::Instant;

use bytes::Bytes;
use dropshot::Body;
use futures::StreamExt;
use http::{Response, StatusCode};

use super::Call;
use super::error::GatewayError;
use crate::auth::Caller;
use crate::config::Model;
use crate::context::Context;
use crate::meter::Endpoint;
use crate::meter::estimate::Estimate;
use crate::units::{Quantities, Unit};

/// OpenAI's audio models read at most this many audio tokens a second
/// (its Realtime models document one token per 100 ms of input audio; the
/// bound is twice that, so it holds whatever the model's framing).
pub const AUDIO_TOKENS_PER_SECOND: u64 = 20;

pub(crate) const AUDIO_SECONDS: &str = "audio_seconds";
pub(crate) const CHARACTERS: &str = "characters";
pub(crate) const AUDIO_INPUT_TOKENS: &str = "audio_input_tokens";
pub(crate) const AUDIO_OUTPUT_TOKENS: &str = "audio_output_tokens";

/// Sets `unit` in `q` when `model` is priced in it.
fn put(q: &mut Quantities, model: &Model, unit: Unit, n: u64) {
    if model.prices.is_some_and(|p| p.get(unit).is_some()) {
        // A model carries at most as many units as fit.
        let _ = q.set(unit, n);
    }
}

/// A worst case made only of units (no clamping: audio cannot be cut
/// short to fit a budget), with `prompt_tokens` of text input.
fn estimate(prompt_tokens: u64, units: Quantities) -> Estimate {
    Estimate { prompt_tokens, max_output: 0, choices: 1, extra_output: 0, units }
}

/// Admits a media call.
async fn admit(
    ctx: &Context,
    caller: Caller,
    model: std::sync::Arc<Model>,
    endpoint: Endpoint,
    started: Instant,
    estimate: &Estimate,
) -> Result<Call, GatewayError> {
    Call::admit_media(ctx, caller, model, endpoint, started, estimate).await
}

/// The provider's binary answer, streamed to the client chunk by chunk as
/// it arrives (the call is already settled: its cost was known from the
/// request or the answer's headers). A provider that stalls longer than
/// its timeout between chunks ends the body.
fn binary_response(
    call: &Call,
    upstream: reqwest::Response,
    cost: i64,
    extra_headers: &[(&str, String)],
) -> Response<Body> {
    let content_type = upstream
        .headers()
        .get(http::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("application/octet-stream"));
    let timeout = call.model().provider.timeout;
    let (tx, body) = super::sse::channel();
    tokio::spawn(async move {
        let mut chunks = upstream.bytes_stream();
        loop {
            match tokio::time::timeout(timeout, chunks.next()).await {
                Ok(Some(Ok(chunk))) => {
                    if !super::sse::send(&tx, chunk).await {
                        // The client went away: dropping the upstream
                        // stops the provider.
                        return;
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "provider audio stream broke off");
                    return;
                }
                Ok(None) | Err(_) => return,
            }
        }
    });
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("qlaud-cost-micros", cost);
    for (name, value) in extra_headers {
        b = b.header(*name, value);
    }
    b.body(body).expect("a valid response")
}

/// A text answer (`text`, `srt`, `vtt` transcripts) as the provider sent it.
fn text_response(content_type: &str, text: Bytes, cost: i64) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("qlaud-cost-micros", cost)
        .body(Body::with_content(text))
        .expect("a valid response")
}

/// Reads a whole provider answer (a transcript: small, JSON or text).
pub(super) async fn read_body(
    call: &Call,
    upstream: reqwest::Response,
) -> Result<Bytes, GatewayError> {
    let provider = call.model().provider.clone();
    match tokio::time::timeout(provider.timeout, upstream.bytes()).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            Err(GatewayError::new(502, format!("reading provider {}: {e}", provider.name)))
        }
        Err(_) => {
            Err(GatewayError::new(504, format!("provider {} stalled mid-answer", provider.name)))
        }
    }
}
