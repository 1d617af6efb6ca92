//! `POST /v1/embeddings`: OpenAI's Embeddings API for the catalog's
//! embedding models, passed through to OpenAI-shaped providers and metered
//! like every model call (input tokens; no output).

use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response};
use qlaud_api::{EmbeddingRequest, ModelBody};
use serde_json::Value;

use super::error::GatewayError;
use super::{Call, Shape, json_response, read_json, send, to_vec};
use crate::auth::Caller;
use crate::config::{ModelKind, ProviderKind};
use crate::context::Context;
use crate::meter::Usage;
use crate::meter::estimate::{Estimate, PromptBound};
use crate::providers::openai;

pub async fn embeddings(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<EmbeddingRequest>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let req = body.read().await?;
    embeddings_as(ctx, caller, req).await
}

/// `POST /v1/embeddings` for a caller already known (jobs).
pub async fn embeddings_as(
    ctx: &Context,
    caller: Caller,
    mut req: EmbeddingRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let model = ctx.gateway.model(&req.model, ModelKind::Embedding)?;
    if !matches!(model.provider.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        return Err(GatewayError::bad_request(format!(
            "model {:?}: its provider {} has no embeddings API",
            model.name, model.provider.name
        )));
    }
    if req.input.is_null() || req.input.as_array().is_some_and(Vec::is_empty) {
        return Err(GatewayError::bad_request("input must be a string or a non-empty array"));
    }
    req.model = model.upstream.clone();
    let body = to_vec(&req)?;
    // Every byte of the forwarded body bounds its tokens (token-id arrays
    // included: each id takes at least a digit and a comma).
    let mut bound = PromptBound::default();
    bound.field("input", &req.input);
    bound.fields(&req.extra);
    let estimate = Estimate {
        prompt_tokens: bound.finish(model.context_window),
        max_output: 0,
        choices: 1,
        extra_output: 0,
        units: Default::default(),
    };
    let mut call =
        Call::admit(ctx, caller, model.clone(), Shape::Embeddings, false, started, &estimate)
            .await?;
    let http = openai::embeddings_request(ctx.gateway.client(&model), &model, body)?;
    let upstream = send(&mut call, http).await?;
    let mut v = read_json(&mut call, upstream).await?;
    let usage = match v.get("usage").filter(|u| u.is_object()) {
        Some(u) => Usage {
            input_tokens: u["prompt_tokens"]
                .as_u64()
                .or_else(|| u["total_tokens"].as_u64())
                .unwrap_or(0),
            ..Default::default()
        },
        // No count: the reserved bound, as for every answer without usage.
        None => call.admission().unreported.usage(None, 0),
    };
    let cost = call.settle(200, usage).await;
    v["model"] = Value::String(model.name.clone());
    if !v["usage"].is_object() {
        v["usage"] = serde_json::json!({"prompt_tokens": usage.input_tokens,
                                        "total_tokens": usage.input_tokens});
    }
    v["usage"]["cost_micros"] = cost.into();
    Ok(json_response(&call, &v, cost))
}
