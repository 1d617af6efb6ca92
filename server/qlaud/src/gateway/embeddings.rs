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
use crate::config::{Model, ModelKind, ProviderKind};
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

/// The worst case of an embeddings request to `model`.
pub fn estimate(model: &Model, req: &EmbeddingRequest) -> Estimate {
    // Every byte of the forwarded body bounds its tokens (token-id arrays
    // included: each id takes at least a digit and a comma).
    let mut bound = PromptBound::default();
    bound.field("input", &req.input);
    bound.fields(&req.extra);
    Estimate {
        prompt_tokens: bound.finish(model.context_window),
        max_output: 0,
        choices: 1,
        extra_output: 0,
        units: Default::default(),
    }
}

/// `POST /v1/embeddings` for a caller already known (jobs).
pub async fn embeddings_as(
    ctx: &Context,
    caller: Caller,
    mut req: EmbeddingRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let model = ctx.gateway.model(&req.model, ModelKind::Embedding)?;
    if model.provider.kind == ProviderKind::Local {
        return local(ctx, caller, model, req, started).await;
    }
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
    let estimate = estimate(&model, &req);
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

/// The most texts one request to the local model may carry (OpenAI's own
/// limit).
const MAX_LOCAL_INPUTS: usize = 2048;

/// The in-process model (the one search uses): counted exactly before the
/// call, so the reservation is the cost, and run on the model's thread.
async fn local(
    ctx: &Context,
    caller: Caller,
    model: std::sync::Arc<crate::config::Model>,
    req: EmbeddingRequest,
    started: Instant,
) -> Result<Response<Body>, GatewayError> {
    let texts: Vec<String> = match &req.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_LOCAL_INPUTS => {
            items.iter().map(|i| i.as_str().map(str::to_string)).collect::<Option<_>>().ok_or_else(
                || {
                    GatewayError::bad_request(format!(
                        "model {:?} embeds text: input must be a string or an array of strings",
                        model.name
                    ))
                },
            )?
        }
        _ => {
            return Err(GatewayError::bad_request(format!(
                "input must be a string or an array of 1 to {MAX_LOCAL_INPUTS} strings"
            )));
        }
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "encoding_format {other:?}: use \"float\" or \"base64\""
            )));
        }
    };
    if req.dimensions.is_some_and(|d| d != crate::embed::DIMENSIONS as u64) {
        return Err(GatewayError::bad_request(format!(
            "model {:?} has {} dimensions and cannot shorten them",
            model.name,
            crate::embed::DIMENSIONS
        )));
    }
    let embedder = &ctx.search.embedder;
    let counts = embedder.count_tokens(texts.clone()).await.map_err(crate::error::Error::from)?;
    let tokens: u64 = counts.iter().map(|n| *n as u64).sum();
    let estimate = Estimate {
        prompt_tokens: tokens,
        max_output: 0,
        choices: 1,
        extra_output: 0,
        units: Default::default(),
    };
    let mut call =
        Call::admit(ctx, caller, model.clone(), Shape::Embeddings, false, started, &estimate)
            .await?;
    let vectors = match embedder.embed(texts).await {
        Ok(v) => v,
        Err(e) => {
            call.settle(503, Usage::default()).await;
            return Err(crate::error::Error::from(e).into());
        }
    };
    let cost = call.settle(200, Usage { input_tokens: tokens, ..Default::default() }).await;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, (v, _))| {
            let embedding = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            };
            serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let v = serde_json::json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "cost_micros": cost},
    });
    Ok(json_response(&call, &v, cost))
}
