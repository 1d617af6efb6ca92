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
//! when usage never comes. History loaded for `previous_response_id` or
//! `conversation` is part of that body, so it is reserved and billed as
//! the prompt it is.
//!
//! Response state is qlaud's (`state`): the history is loaded before the
//! call, and the completed response is kept when its answer is whole.

mod passthrough;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::{ModelBody, ResponseDeleted, ResponseObject, ResponsesRequest};
use serde_json::Value;

use super::error::GatewayError;
use super::stream::stream;
use super::{Route, Shape, choices, json_answer_with, retry, send, to_vec};
use crate::auth::Caller;
use crate::config::{Model, ModelKind, ProviderKind};
use crate::context::Context;
use crate::dialects::responses as dialect;
use crate::meter::estimate::{self, Estimate, PromptBound};
use crate::providers::ir::Message;
use crate::providers::{openai, perplexity};
use crate::threads::access;
use state::{History, Keep};

/// `POST /v1/responses`.
pub async fn create(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<ResponsesRequest>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let req = body.read().await?;
    create_as(ctx, caller, headers, req).await
}

/// `POST /v1/responses` for a caller already known (jobs). Retried and
/// falling back as `/v1/messages` does (see `super::retry`): the history
/// and what is kept of the answer are read once, and each attempt sends
/// the client's request to its model, admitted and settled on its own.
pub async fn create_as(
    ctx: &Context,
    caller: Caller,
    headers: &HeaderMap,
    req: ResponsesRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let model = ctx.gateway.model(&req.model, ModelKind::Chat)?;
    dialect::check(&req, model.provider.kind == ProviderKind::Perplexity)?;
    let history = History::load(ctx, &caller, &req).await?;
    let keep = Keep::new(ctx, &caller, &req, history)?;
    let mut attempts = retry::Attempts::new(&ctx.gateway, model);
    let mut req = Some(req);
    loop {
        let model = attempts.model().clone();
        // The last attempt takes the request rather than copy it.
        let this = match attempts.more() {
            true => req.clone(),
            false => req.take(),
        };
        let Some(this) = this else {
            return Err(GatewayError::new(500, "no request left to retry"));
        };
        let result = attempt(ctx, &caller, headers, this, model, &keep, started);
        match result.await {
            Ok(answer) => return Ok(answer),
            Err(err) => attempts.next(err).await?,
        }
    }
}

/// One attempt of a `/v1/responses` request, at `model`.
async fn attempt(
    ctx: &Context,
    caller: &Caller,
    headers: &HeaderMap,
    req: ResponsesRequest,
    model: Arc<Model>,
    keep: &Keep,
    started: Instant,
) -> Result<Response<Body>, GatewayError> {
    // A fallback of another provider may not take what the first did.
    dialect::check(&req, model.provider.kind == ProviderKind::Perplexity)?;
    // The model's limit when missing (or larger), as on the other dialects.
    let wanted =
        req.max_output_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    let history = keep.history();
    let route = Route {
        ctx,
        headers,
        caller: caller.clone(),
        model: model.clone(),
        shape: Shape::Responses,
        started,
        keep: Some(keep.clone()),
    };
    // Providers that speak this shape themselves take the client's body.
    if matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::Perplexity) {
        let earlier = history.input_items()?;
        return passthrough(route, req, earlier, wanted).await;
    }
    let mut ir = dialect::parse(&req, &model.name, wanted)?;
    let mut messages = history.messages()?;
    for m in std::mem::take(&mut ir.messages) {
        Message::push(&mut messages, m.role, m.content);
    }
    ir.messages = messages;
    route.translated(ir, false, None).await
}

/// `GET /v1/responses/{response_id}`: the response as it was returned.
pub async fn get(
    ctx: &Context,
    headers: &HeaderMap,
    response_id: &str,
) -> Result<ResponseObject, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let row = ctx.store.get_response(access(&caller), response_id).await?;
    serde_json::from_str(&row.body).map_err(|e| {
        GatewayError::new(500, format!("stored response {response_id} is unreadable: {e}"))
    })
}

/// `DELETE /v1/responses/{response_id}`.
pub async fn delete(
    ctx: &Context,
    headers: &HeaderMap,
    response_id: &str,
) -> Result<ResponseDeleted, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    ctx.store.delete_response(access(&caller), response_id).await?;
    Ok(ResponseDeleted {
        id: response_id.to_string(),
        object: "response.deleted".into(),
        deleted: true,
    })
}

/// The worst case of `req` as forwarded to a provider's own Responses API
/// (OpenAI's or Perplexity's). For Perplexity it also bounds the provider's
/// own tool loop, setting `max_steps` on `req` to the steps reserved.
pub(super) fn passthrough_estimate(
    model: &Model,
    req: &mut ResponsesRequest,
    wanted: u64,
) -> Result<Estimate, GatewayError> {
    let loop_bound = match model.provider.kind == ProviderKind::Perplexity {
        true => perplexity::steps(model, req.tools.as_deref().unwrap_or(&[]), &mut req.extra)?,
        false => perplexity::Steps { steps: 1, calls: Default::default() },
    };
    let body = serde_json::to_value(&*req).map_err(|e| GatewayError::new(500, e.to_string()))?;
    // Each step of a provider's own tool loop reads the context again, up
    // to the whole window, and writes up to the output limit.
    let later_steps = loop_bound.steps - 1;
    Ok(Estimate {
        prompt_tokens: PromptBound::body(&body)
            .finish(model.context_window)
            .saturating_add(later_steps.saturating_mul(model.context_window)),
        max_output: wanted,
        choices: choices(&req.extra)?.saturating_mul(loop_bound.steps),
        extra_output: estimate::extra_output(&req.extra),
        units: loop_bound.calls,
    })
}

/// A GPT or Perplexity model: the client's body to the provider's
/// Responses API, after the `earlier` items of its history.
async fn passthrough(
    route: Route<'_>,
    mut req: ResponsesRequest,
    earlier: Vec<Value>,
    wanted: u64,
) -> Result<Response<Body>, GatewayError> {
    let model = route.model.clone();
    let streamed = req.stream.unwrap_or(false);
    req.model = model.upstream.clone();
    // The provider keeps no state for qlaud's clients: qlaud does, and sends
    // the history itself.
    req.store = Some(false);
    req.previous_response_id = None;
    req.conversation = None;
    if !earlier.is_empty() {
        let new = match req.input.take() {
            Some(Value::String(s)) => vec![serde_json::json!({"role": "user", "content": s})],
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        req.input = Some(Value::Array(earlier.into_iter().chain(new).collect()));
    }
    req.max_output_tokens = Some(wanted);
    let perplexity = model.provider.kind == ProviderKind::Perplexity;
    let estimate = passthrough_estimate(&model, &mut req, wanted)?;
    let mut call = route.admit(streamed, &estimate).await?;
    req.max_output_tokens = Some(call.admission().max_output_tokens);
    let client = route.ctx.gateway.client(&model);
    let http = match perplexity {
        true => perplexity::request(client, &model, to_vec(&req)?)?,
        false => openai::responses_request(client, &model, to_vec(&req)?)?,
    };
    let upstream = send(&mut call, http).await?;
    if streamed {
        let echo = route.keep.as_ref().map(|k| k.echo().clone()).unwrap_or_default();
        let tap = passthrough::Tap::new(&model, call.admission().unreported, echo);
        Ok(stream(call, upstream, tap))
    } else {
        json_answer_with(call, upstream, openai::responses_usage, perplexity::tool_calls).await
    }
}
