//! `POST /v1/responses`: OpenAI's Responses API as a third client dialect.
//!
//! GPT models (provider kind `openai`) pass through to the provider's own
//! Responses endpoint: the client's body goes on with only `model`,
//! `store: false` and the reserved `max_output_tokens` changed, and its
//! events are forwarded as they arrive, the final usage annotated with
//! cost. Every other model is translated: the dialect
//! (`crate::dialects::responses`) parses the request into the internal
//! representation, the provider renders its own from that, and the answer
//! comes back rendered in the Responses shape.
//!
//! Metering is the same as on the other dialects: the worst case of the
//! body as forwarded is reserved before the provider is called, and the
//! call is settled from the provider's usage, or by the `Unreported` rule
//! when usage never comes.

mod passthrough;

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::ResponsesRequest;

use super::error::GatewayError;
use super::stream::stream;
use super::{Route, Shape, choices, json_answer, send, to_vec};
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::dialects::responses as dialect;
use crate::meter::estimate::{self, Estimate, PromptBound};
use crate::providers::openai;

/// `POST /v1/responses`.
pub async fn create(
    ctx: &Context,
    headers: &HeaderMap,
    req: ResponsesRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let model = ctx.gateway.model(&req.model, ModelKind::Chat)?;
    dialect::check(&req)?;
    // The model's limit when missing (or larger), as on the other dialects.
    let wanted =
        req.max_output_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    let route = Route { ctx, headers, caller, model, shape: Shape::Responses, started };
    if route.model.provider.kind == ProviderKind::Openai {
        return passthrough(route, req, wanted).await;
    }
    let ir = dialect::parse(&req, &route.model.name, wanted)?;
    route.translated(ir, false, None).await
}

/// A GPT model: the client's body to the provider's Responses API.
async fn passthrough(
    route: Route<'_>,
    mut req: ResponsesRequest,
    wanted: u64,
) -> Result<Response<Body>, GatewayError> {
    let model = route.model.clone();
    let streamed = req.stream.unwrap_or(false);
    req.model = model.upstream.clone();
    // The provider keeps no state for qlaud's clients: qlaud will.
    req.store = Some(false);
    req.max_output_tokens = Some(wanted);
    let body = serde_json::to_value(&req).map_err(|e| GatewayError::new(500, e.to_string()))?;
    let estimate = Estimate {
        prompt_tokens: PromptBound::body(&body).finish(model.context_window),
        max_output: wanted,
        choices: choices(&req.extra)?,
        extra_output: estimate::extra_output(&req.extra),
    };
    let mut call = route.admit(streamed, &estimate).await?;
    req.max_output_tokens = Some(call.admission().max_output_tokens);
    let http = openai::responses_request(route.ctx.gateway.client(&model), &model, to_vec(&req)?)?;
    let upstream = send(&mut call, http).await?;
    if streamed {
        let tap = passthrough::Tap::new(&model, call.admission().unreported);
        Ok(stream(call, upstream, tap))
    } else {
        json_answer(call, upstream, openai::responses_usage).await
    }
}
