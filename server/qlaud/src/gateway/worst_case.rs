//! A call's worst case from its request alone, as its handler reserves it:
//! what a job holds of its key's budget from submission until it runs
//! (the run takes that reservation over when it still covers the call).

use qlaud_api::{ChatCompletionRequest, MessagesRequest, ResponsesRequest};
use serde_json::Value;

use super::error::GatewayError;
use super::{chat_max_tokens, choices, pass_through_estimate, translation_estimate};
use crate::config::{Model, ProviderKind};
use crate::dialects;
use crate::meter::estimate::{self, Estimate, PromptBound};
use crate::providers::{self, ir};

pub use super::embeddings::estimate as embeddings;

/// A request going through the internal representation: the body the
/// provider would get (the offline model reads the request itself).
fn translated(model: &Model, req: &ir::Request) -> Result<Estimate, GatewayError> {
    let body = match providers::chat(model.provider.kind) {
        Some(provider) => provider.body(req, model),
        None => serde_json::to_value(req).map_err(|e| GatewayError::new(500, e.to_string()))?,
    };
    Ok(translation_estimate(model, &body, req.max_tokens))
}

/// `POST /v1/messages`.
pub fn messages(model: &Model, req: &MessagesRequest) -> Result<Estimate, GatewayError> {
    let wanted = req.max_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    if model.provider.kind != ProviderKind::Anthropic {
        return translated(model, &dialects::messages::parse(req, wanted)?);
    }
    pass_through_estimate(model, &req.messages, req.system.as_ref(), &req.extra, wanted)
}

/// `POST /v1/chat/completions`.
pub fn chat_completions(
    model: &Model,
    req: &ChatCompletionRequest,
) -> Result<Estimate, GatewayError> {
    let wanted = chat_max_tokens(req, model);
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        return translated(model, &dialects::chat::parse(req, wanted)?);
    }
    pass_through_estimate(model, &req.messages, None, &req.extra, wanted)
}

/// `POST /v1/responses`, before any stored history it continues (the run
/// admits afresh when that history makes the call dearer than this).
pub fn responses(model: &Model, req: &ResponsesRequest) -> Result<Estimate, GatewayError> {
    let wanted =
        req.max_output_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::Perplexity) {
        return translated(model, &dialects::responses::parse(req, &model.name, wanted)?);
    }
    // As forwarded: qlaud keeps the state, the provider none.
    let mut req = req.clone();
    req.model = model.upstream.clone();
    req.store = Some(false);
    req.previous_response_id = None;
    req.conversation = None;
    req.max_output_tokens = Some(wanted);
    super::responses::passthrough_estimate(model, &mut req, wanted)
}

/// A thread turn: the body as sent bounds what it adds to the thread's
/// history, with `max_output` (the model's limit when `None`). The run
/// admits afresh when the history makes the call dearer.
pub fn body(
    model: &Model,
    body: &Value,
    max_output: Option<u64>,
) -> Result<Estimate, GatewayError> {
    let fields = body.as_object().cloned().unwrap_or_default();
    Ok(Estimate {
        prompt_tokens: PromptBound::body(body).finish(model.context_window),
        max_output: max_output.unwrap_or(model.max_output_tokens).min(model.max_output_tokens),
        choices: choices(&fields)?,
        extra_output: estimate::extra_output(&fields),
        units: Default::default(),
    })
}
