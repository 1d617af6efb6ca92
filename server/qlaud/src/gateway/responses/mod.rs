//! `POST /v1/responses`: OpenAI's Responses API as a third client dialect.
//!
//! GPT models (provider kind `openai`) pass through to the provider's own
//! Responses endpoint: the client's body goes on with only `model`,
//! `store: false` and the reserved `max_output_tokens` changed, and its
//! events are forwarded as they arrive, the final usage annotated with
//! cost. Every other model is translated: the request becomes OpenAI's
//! chat shape (`request.rs`) and from there the provider's own, and the
//! answer comes back through the internal representation, written in the
//! Responses shape (`encode.rs`).
//!
//! Metering is the same as on the other dialects: the worst case of the
//! body as forwarded is reserved before the provider is called, and the
//! call is settled from the provider's usage, or by the `Unreported` rule
//! when usage never comes.

pub mod encode;
mod passthrough;
mod request;

use std::sync::Arc;
use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::ResponsesRequest;

use super::error::GatewayError;
use super::stream::stream;
use super::{
    Call, Shape, answer_translated, choices, echo, json_answer, send, to_vec, translation_estimate,
};
use crate::auth::Caller;
use crate::config::{Model, ProviderKind};
use crate::context::Context;
use crate::meter::estimate::{self, Estimate, PromptBound};
use crate::providers::{self, anthropic, openai};

/// `POST /v1/responses`.
pub async fn create(
    ctx: &Context,
    headers: &HeaderMap,
    req: ResponsesRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let model = ctx.gateway.model(&req.model, crate::config::ModelKind::Chat)?;
    request::check(&req)?;
    let streamed = req.stream.unwrap_or(false);
    // The model's limit when missing (or larger), as on the other dialects.
    let wanted =
        req.max_output_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    let go = Go { ctx, headers, caller, model, streamed, wanted, started };
    match go.model.provider.kind {
        ProviderKind::Openai => go.passthrough(req).await,
        _ => go.translated(req).await,
    }
}

/// A checked request on its way to the provider.
struct Go<'a> {
    ctx: &'a Context,
    headers: &'a HeaderMap,
    caller: Caller,
    model: Arc<Model>,
    streamed: bool,
    /// The output limit asked for, capped at the model's.
    wanted: u64,
    started: Instant,
}

impl Go<'_> {
    async fn admit(self, estimate: Estimate) -> Result<(Call, Self), GatewayError> {
        let call = Call::admit(
            self.ctx,
            self.caller.clone(),
            self.model.clone(),
            Shape::Responses,
            self.streamed,
            self.started,
            &estimate,
        )
        .await?;
        Ok((call, self))
    }

    /// A GPT model: the client's body to the provider's Responses API.
    async fn passthrough(self, mut req: ResponsesRequest) -> Result<Response<Body>, GatewayError> {
        req.model = self.model.upstream.clone();
        // The provider keeps no state for qlaud's clients: qlaud will.
        req.store = Some(false);
        req.max_output_tokens = Some(self.wanted);
        let body = serde_json::to_value(&req).map_err(|e| GatewayError::new(500, e.to_string()))?;
        let estimate = Estimate {
            prompt_tokens: PromptBound::body(&body).finish(self.model.context_window),
            max_output: self.wanted,
            choices: choices(&req.extra)?,
            extra_output: estimate::extra_output(&req.extra),
        };
        let (mut call, go) = self.admit(estimate).await?;
        req.max_output_tokens = Some(call.admission().max_output_tokens);
        let http =
            openai::responses_request(go.ctx.gateway.client(&go.model), &go.model, to_vec(&req)?)?;
        let upstream = send(&mut call, http).await?;
        if go.streamed {
            let tap = passthrough::Tap::new(&go.model, call.admission().unreported);
            Ok(stream(call, upstream, tap))
        } else {
            json_answer(call, upstream, openai::responses_usage).await
        }
    }

    /// Any other model: through the chat shape and the internal
    /// representation.
    async fn translated(self, req: ResponsesRequest) -> Result<Response<Body>, GatewayError> {
        let mut chat = request::to_chat(&req, &self.model.name, self.streamed)?;
        match self.model.provider.kind {
            ProviderKind::Anthropic => {
                let upstream_id = &self.model.upstream;
                let mut body = anthropic::convert::request_from_openai(
                    &chat,
                    upstream_id,
                    self.wanted,
                    self.streamed,
                )?;
                let estimate = translation_estimate(&self.model, &body, self.wanted);
                let (mut call, go) = self.admit(estimate).await?;
                body["max_tokens"] = call.admission().max_output_tokens.into();
                let client = go.ctx.gateway.client(&go.model);
                let http = anthropic::request(client, &go.model, go.headers, to_vec(&body)?)?;
                let upstream = send(&mut call, http).await?;
                let mut decoder = anthropic::convert::Decoder::default();
                let decode = move |raw: &[u8]| decoder.decode(raw);
                let completion = anthropic::convert::completion;
                answer_translated(call, upstream, go.streamed, decode, false, completion).await
            }
            ProviderKind::Echo => {
                let body = serde_json::to_value(&chat)
                    .map_err(|e| GatewayError::new(500, e.to_string()))?;
                let estimate = translation_estimate(&self.model, &body, self.wanted);
                let (call, _) = self.admit(estimate).await?;
                let max_tokens = call.admission().max_output_tokens;
                let reply = providers::echo::reply(None, &chat.messages, max_tokens);
                echo::answer(call, reply, false).await
            }
            // A chat-only service that speaks OpenAI's chat shape.
            ProviderKind::OpenaiCompatible | ProviderKind::Openai => {
                chat.model = self.model.upstream.clone();
                chat.max_completion_tokens = None;
                chat.max_tokens = Some(self.wanted);
                if self.streamed {
                    // Usage arrives only when asked for: always ask.
                    chat.extra.insert(
                        "stream_options".into(),
                        serde_json::json!({"include_usage": true}),
                    );
                }
                let body = serde_json::to_value(&chat)
                    .map_err(|e| GatewayError::new(500, e.to_string()))?;
                let estimate = translation_estimate(&self.model, &body, self.wanted);
                let (mut call, go) = self.admit(estimate).await?;
                chat.max_tokens = Some(call.admission().max_output_tokens);
                let client = go.ctx.gateway.client(&go.model);
                let http = openai::request(client, &go.model, to_vec(&chat)?)?;
                let upstream = send(&mut call, http).await?;
                let mut decoder = openai::convert::Decoder::default();
                let decode = move |raw: &[u8]| decoder.decode(raw);
                let completion = openai::convert::completion;
                answer_translated(call, upstream, go.streamed, decode, false, completion).await
            }
        }
    }
}
