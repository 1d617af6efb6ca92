//! `POST /v1/messages/count_tokens`: Anthropic's token counting, for any
//! model. Claude models ask their provider; the others are counted locally
//! (`crate::tokens`). Counting is free, so nothing here touches the ledger:
//! a key at its cap may still count, and only a key that may not be used at
//! all (suspended, revoked, disabled) is refused.

use std::sync::{Arc, LazyLock};

use http::HeaderMap;
use qlaud_api::{MessageTokensCount, MessageTokensRequest, MessagesRequest, ModelBody};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::error::GatewayError;
use super::error_chain;
use crate::auth::Caller;
use crate::config::{Model, ModelKind, ProviderKind};
use crate::context::Context;
use crate::dialects::messages;
use crate::error::Error;
use crate::providers::{anthropic, echo, ir};
use crate::tokens::Tokenizer;

/// `POST /v1/messages/count_tokens`.
pub async fn count(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<MessageTokensRequest>,
) -> Result<MessageTokensCount, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let mut req = body.read().await?;
    let model = ctx.gateway.model(&req.model, ModelKind::Chat)?;
    usable(ctx, &caller).await?;
    let local = |input_tokens| MessageTokensCount { input_tokens, extra: Map::new() };
    match model.provider.kind {
        ProviderKind::Anthropic => {
            req.model = model.upstream.clone();
            forward(ctx, &model, headers, &req).await
        }
        // The offline model's own rule is exactly what it bills.
        ProviderKind::Echo => {
            let req = ir::Request {
                system: messages::system(req.system.as_ref()),
                messages: messages::messages(&req.messages)?,
                ..ir::Request::default()
            };
            Ok(local(echo::count_input(&req)))
        }
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Perplexity => {
            // Counting is free, so no spend cap bounds the CPU a key can ask
            // for here: a flood of large requests queues for a few threads
            // instead of taking every core from the gateway.
            let _turn = COUNTING.acquire().await;
            let n = spawn_count(model, req.system, req.messages, req.tools)
                .await
                .map_err(|e| GatewayError::new(500, format!("counting tokens failed: {e}")))?;
            Ok(local(n))
        }
        // Configuration keeps chat models off the media and local
        // providers.
        ProviderKind::Elevenlabs | ProviderKind::Deepgram | ProviderKind::Local => {
            Err(GatewayError::bad_request(format!("model {:?} is not a chat model", model.name)))
        }
    }
}

/// How many free local counts run at once: one per core.
static COUNTING: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// The local estimate of a prompt, counted on a blocking thread: a long
/// conversation takes a while to tokenize (and the first count loads the
/// tokenizer), which must not hold up the runtime's other requests.
fn spawn_count(
    model: Arc<Model>,
    system: Option<Value>,
    messages: Vec<Value>,
    tools: Option<Vec<Value>>,
) -> JoinHandle<u64> {
    tokio::task::spawn_blocking(move || {
        Tokenizer::for_model(&model).messages_request(system.as_ref(), &messages, tools.as_deref())
    })
}

/// [`spawn_count`] of a `/v1/messages` request, whose tools are among its
/// other fields.
pub(super) fn spawn_estimate(model: Arc<Model>, mut req: MessagesRequest) -> JoinHandle<u64> {
    let tools = match req.extra.remove("tools") {
        Some(Value::Array(tools)) => Some(tools),
        _ => None,
    };
    spawn_count(model, req.system, req.messages, tools)
}

/// Refuses a key that may not be used for anything, whatever its spend: the
/// authentication cache can be up to two seconds behind a revocation in
/// another process, and suspension is otherwise only checked on admission.
async fn usable(ctx: &Context, caller: &Caller) -> Result<(), GatewayError> {
    let key = ctx.store.get_key(&caller.tenant_id, &caller.key_id).await?;
    if key.revoked_ms.is_some() || key.disabled != 0 {
        ctx.auth_cache.clear();
        return Err(Error::key_unusable().into());
    }
    if key.suspended_ms.is_some() {
        return Err(Error::key_suspended().into());
    }
    Ok(())
}

/// Asks the provider's own count_tokens, with the headers `/v1/messages`
/// forwards. Its errors come back as the client's, as for messages.
async fn forward(
    ctx: &Context,
    model: &Model,
    headers: &HeaderMap,
    req: &MessageTokensRequest,
) -> Result<MessageTokensCount, GatewayError> {
    let provider = &model.provider;
    let body = serde_json::to_vec(req).map_err(|e| GatewayError::new(500, e.to_string()))?;
    let http = ctx.gateway.client(model);
    let upstream = anthropic::post(http, model, headers, "/v1/messages/count_tokens", body)?;
    let answer = tokio::time::timeout(provider.timeout, async {
        let resp = upstream.send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.bytes().await?))
    })
    .await;
    let (status, bytes) = match answer {
        Ok(Ok(answer)) => answer,
        Err(_) => {
            return Err(GatewayError::new(
                504,
                format!(
                    "provider {} did not answer within {} s",
                    provider.name,
                    provider.timeout.as_secs()
                ),
            ));
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(GatewayError::new(
                504,
                format!("provider {} timed out: {e}", provider.name),
            ));
        }
        Ok(Err(e)) => {
            return Err(GatewayError::new(
                502,
                format!("could not reach provider {}: {}", provider.name, error_chain(&e)),
            ));
        }
    };
    if !(200..300).contains(&status) {
        return Err(GatewayError::from_upstream(&provider.name, false, status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::new(502, format!("provider {} sent an invalid count: {e}", provider.name))
    })
}
