//! The model request path: authenticate → resolve the model → call the
//! provider (or answer offline) → answer the client as JSON or a stream →
//! hand the usage to `meter`.
//!
//! Same-shape calls pass through: qlaud reads only what it needs (model,
//! limits, usage) and forwards everything else untouched, stream events byte
//! for byte except the few it annotates with cost.

mod echo;
pub mod error;
mod shape;
pub mod sse;
mod stream;

use shape::ClientEncoder;
pub use shape::Shape;
use stream::{Translator, stream};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response, StatusCode};
use qlaud_api::{ChatCompletionRequest, MessagesRequest, ModelInfo, ModelList, ModelPricing, Usd};
use serde_json::Value;

use crate::auth::Caller;
use crate::clock::Clock;
use crate::config::{Catalog, Model, ProviderKind};
use crate::context::Context;
use crate::meter::ledger::{self, Admission};
use crate::meter::{Recorder, RequestRecord, Usage, estimate};
use crate::providers::ir::Completion;
use crate::providers::{self, anthropic, openai};
use error::GatewayError;

/// Providers and models with a pooled HTTP client per provider.
pub struct Gateway {
    pub catalog: Catalog,
    clients: HashMap<String, reqwest::Client>,
}

impl Gateway {
    pub fn new(catalog: Catalog) -> Gateway {
        let clients = catalog
            .models()
            .map(|m| (m.provider.name.clone(), providers::http_client(&m.provider)))
            .collect();
        Gateway { catalog, clients }
    }

    fn client(&self, model: &Model) -> &reqwest::Client {
        &self.clients[&model.provider.name]
    }

    /// A model that may be served: known and priced.
    fn model(&self, name: &str) -> Result<Arc<Model>, GatewayError> {
        let model = self.catalog.model(name).ok_or_else(|| GatewayError::model_not_found(name))?;
        if model.prices.is_none() {
            return Err(GatewayError::bad_request(format!(
                "model {name:?} has no price configured, and qlaud never serves a model at $0 \
                 by accident; set its prices in qlaud.toml"
            ))
            .with_code("model_not_priced"));
        }
        Ok(model.clone())
    }

    pub fn list(&self) -> ModelList {
        let usd =
            |micros: i64| Usd::from_micros(micros).unwrap_or_else(|| Usd::from_micros(0).unwrap());
        let data: Vec<ModelInfo> = self
            .catalog
            .models()
            .filter_map(|m| {
                let p = m.prices?;
                Some(ModelInfo {
                    id: m.name.clone(),
                    object: "model".into(),
                    kind: "model".into(),
                    display_name: m.display_name.clone(),
                    created: 1_767_225_600,
                    created_at: "2026-01-01T00:00:00Z".into(),
                    owned_by: m.provider.name.clone(),
                    max_output_tokens: m.max_output_tokens,
                    pricing: ModelPricing {
                        input_per_mtok_usd: usd(p.input),
                        output_per_mtok_usd: usd(p.output),
                        cache_read_per_mtok_usd: usd(p.cache_read),
                        cache_write_per_mtok_usd: usd(p.cache_write),
                    },
                })
            })
            .collect();
        ModelList {
            object: "list".into(),
            first_id: data.first().map(|m| m.id.clone()),
            last_id: data.last().map(|m| m.id.clone()),
            has_more: false,
            data,
        }
    }
}

/// One admitted model request. Settling is the last thing that happens to
/// it; when that never comes (an early error, a panic), dropping it settles
/// it: at nothing if the provider was never called, at the reserved amount
/// if it was, since its usage is then unknown.
struct Call {
    caller: Caller,
    model: Arc<Model>,
    shape: Shape,
    streamed: bool,
    started: Instant,
    admission: Admission,
    recorder: Arc<Recorder>,
    clock: Arc<Clock>,
    metrics: Arc<crate::metrics::Metrics>,
    sent: bool,
    settled: bool,
}

impl Call {
    /// Authenticated, resolved and now admitted against the key's cap.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        ctx: &Context,
        caller: Caller,
        model: Arc<Model>,
        shape: Shape,
        streamed: bool,
        started: Instant,
        prompt_bound: u64,
        max_output: u64,
    ) -> Result<Call, GatewayError> {
        let admission =
            ledger::admit(ctx, &caller, &model, shape.endpoint(), prompt_bound, max_output)
                .await
                .inspect_err(|e| {
                if e.status == 402 {
                    ctx.metrics.cap_refusal();
                }
            })?;
        if admission.clamped {
            ctx.metrics.clamp();
        }
        Ok(Call {
            caller,
            model,
            shape,
            streamed,
            started,
            admission,
            recorder: ctx.recorder.clone(),
            clock: ctx.clock.clone(),
            metrics: ctx.metrics.clone(),
            sent: false,
            settled: false,
        })
    }

    fn cost(&self, usage: &Usage) -> i64 {
        RequestRecord::cost_for(&self.model, usage)
    }

    fn record(
        &self,
        status: u16,
        usage: Usage,
        cost_micros: i64,
        recovered: bool,
    ) -> RequestRecord {
        RequestRecord {
            reservation_id: self.admission.reservation_id.clone(),
            tenant_id: self.caller.tenant_id.clone(),
            key_id: self.caller.key_id.clone(),
            model: self.model.name.clone(),
            provider: self.model.provider.name.clone(),
            endpoint: self.shape.endpoint(),
            streamed: self.streamed,
            status,
            usage,
            cost_micros,
            reserved_micros: self.admission.reserved_micros,
            period_start_ms: self.admission.period_start_ms,
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            created_ms: self.clock.now_ms(),
            recovered,
        }
    }

    /// Settles the request at the cost of `usage`; returns that cost.
    async fn settle(&mut self, status: u16, usage: Usage) -> i64 {
        let cost = self.cost(&usage);
        self.settled = true;
        self.metrics.settled(self.shape.endpoint(), status, cost);
        self.recorder.record(self.record(status, usage, cost, false)).await;
        cost
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.settled {
            let record = if self.sent {
                self.record(0, Usage::default(), self.admission.reserved_micros, true)
            } else {
                self.record(500, Usage::default(), 0, false)
            };
            self.recorder.record_now(record);
        }
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    ctx: &Context,
    headers: &HeaderMap,
    mut req: MessagesRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let model = ctx.gateway.model(&req.model)?;
    let streamed = req.stream.unwrap_or(false);
    // Clients ask for far more output than models allow (the Vercel AI SDK
    // sends 128000 for every Claude model): cap at the model's limit, and
    // fill it in when missing, since Anthropic requires it.
    let wanted = req.max_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    let bound =
        estimate::prompt_bound(&req.messages, &[req.system.as_ref(), req.extra.get("tools")]);
    let mut call =
        Call::admit(ctx, caller, model.clone(), Shape::Messages, streamed, started, bound, wanted)
            .await?;
    let max_tokens = call.admission.max_output_tokens;
    match model.provider.kind {
        ProviderKind::Echo => {
            let reply = providers::echo::reply(req.system.as_ref(), &req.messages, max_tokens);
            echo::answer(call, reply, false).await
        }
        ProviderKind::Anthropic => {
            req.model = model.upstream.clone();
            req.max_tokens = Some(max_tokens);
            let body = to_vec(&req)?;
            let http = anthropic::request(ctx.gateway.client(&model), &model, headers, body)?;
            let upstream = send(&mut call, http).await?;
            if streamed {
                let meter = anthropic::StreamTap::new(&model);
                Ok(stream(call, upstream, meter))
            } else {
                json_answer(call, upstream, |v| anthropic::usage(&v["usage"])).await
            }
        }
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            let body = openai::convert::request_from_anthropic(
                &req,
                &model.upstream,
                max_tokens,
                streamed,
            )?;
            let http = openai::request(ctx.gateway.client(&model), &model, to_vec(&body)?)?;
            let upstream = send(&mut call, http).await?;
            if streamed {
                let prompt_estimate =
                    providers::echo::count_input(req.system.as_ref(), &req.messages);
                let mut decoder = openai::convert::Decoder::default();
                let meter =
                    Translator::new(&call, move |raw| decoder.decode(raw), false, prompt_estimate);
                Ok(stream(call, upstream, meter))
            } else {
                json_translated(call, upstream, openai::convert::completion).await
            }
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    ctx: &Context,
    headers: &HeaderMap,
    mut req: ChatCompletionRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let caller = ctx.authenticate(headers).await?;
    let model = ctx.gateway.model(&req.model)?;
    let streamed = req.stream.unwrap_or(false);
    let wanted = chat_max_tokens(&req, &model);
    let bound = estimate::prompt_bound(&req.messages, &[req.extra.get("tools")]);
    let mut call = Call::admit(
        ctx,
        caller,
        model.clone(),
        Shape::ChatCompletions,
        streamed,
        started,
        bound,
        wanted,
    )
    .await?;
    let max_tokens = call.admission.max_output_tokens;
    let wants_usage = wants_usage(&req.extra);
    match model.provider.kind {
        ProviderKind::Echo => {
            let reply = providers::echo::reply(None, &req.messages, max_tokens);
            echo::answer(call, reply, wants_usage).await
        }
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            let prompt_estimate = providers::echo::count_input(None, &req.messages);
            req.model = model.upstream.clone();
            if call.admission.clamped {
                // Lower whichever limit the client used; with none, the one
                // the provider reads.
                if req.max_completion_tokens.is_some()
                    || (req.max_tokens.is_none() && model.provider.kind == ProviderKind::Openai)
                {
                    req.max_completion_tokens = Some(max_tokens);
                    req.max_tokens = None;
                } else {
                    req.max_tokens = Some(max_tokens);
                }
            }
            if streamed {
                // Usage arrives only when asked for: always ask.
                let opts = req
                    .extra
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !opts.is_object() {
                    *opts = Value::Object(Default::default());
                }
                opts["include_usage"] = Value::Bool(true);
            }
            let http = openai::request(ctx.gateway.client(&model), &model, to_vec(&req)?)?;
            let upstream = send(&mut call, http).await?;
            if streamed {
                let meter = openai::StreamTap::new(&model, wants_usage, prompt_estimate);
                Ok(stream(call, upstream, meter))
            } else {
                json_answer(call, upstream, |v| openai::usage(&v["usage"])).await
            }
        }
        ProviderKind::Anthropic => {
            let body = anthropic::convert::request_from_openai(
                &req,
                &model.upstream,
                max_tokens,
                streamed,
            )?;
            let http =
                anthropic::request(ctx.gateway.client(&model), &model, headers, to_vec(&body)?)?;
            let upstream = send(&mut call, http).await?;
            if streamed {
                let prompt_estimate = providers::echo::count_input(None, &req.messages);
                let mut decoder = anthropic::convert::Decoder::default();
                let meter = Translator::new(
                    &call,
                    move |raw| decoder.decode(raw),
                    wants_usage,
                    prompt_estimate,
                );
                Ok(stream(call, upstream, meter))
            } else {
                json_translated(call, upstream, anthropic::convert::completion).await
            }
        }
    }
}

fn to_vec(v: &impl serde::Serialize) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(v).map_err(|e| GatewayError::new(500, e.to_string()))
}

/// The output limit of a chat request: the client's (either field), capped
/// at the model's.
fn chat_max_tokens(req: &ChatCompletionRequest, model: &Model) -> u64 {
    req.max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(model.max_output_tokens)
        .min(model.max_output_tokens)
}

fn wants_usage(extra: &serde_json::Map<String, Value>) -> bool {
    extra.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool)
        == Some(true)
}

/// Sends the upstream request. A provider error becomes the client's error,
/// and the request is settled at nothing: providers do not bill failures.
async fn send(
    call: &mut Call,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, GatewayError> {
    let provider = call.model.provider.clone();
    call.sent = true;
    let result = tokio::time::timeout(provider.timeout, req.send()).await;
    let failure = match result {
        Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = tokio::time::timeout(provider.timeout, resp.bytes()).await;
            let body = body.ok().and_then(Result::ok).unwrap_or_default();
            let openai_shaped = provider.kind != ProviderKind::Anthropic;
            GatewayError::from_upstream(&provider.name, openai_shaped, status, &body)
        }
        Err(_) => GatewayError::new(
            504,
            format!(
                "provider {} did not answer within {} s",
                provider.name,
                provider.timeout.as_secs()
            ),
        ),
        Ok(Err(e)) if e.is_timeout() => {
            GatewayError::new(504, format!("provider {} timed out: {e}", provider.name))
        }
        Ok(Err(e)) => GatewayError::new(
            502,
            format!("could not reach provider {}: {}", provider.name, error_chain(&e)),
        ),
    };
    call.settle(failure.status, Usage::default()).await;
    Err(failure)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A non-streamed provider answer in the client's shape: read usage, add
/// cost, name the model as the client did, settle, answer.
async fn json_answer(
    mut call: Call,
    upstream: reqwest::Response,
    usage_of: impl Fn(&Value) -> Usage,
) -> Result<Response<Body>, GatewayError> {
    let mut v = read_json(&mut call, upstream).await?;
    let usage = usage_of(&v);
    let cost = call.settle(200, usage).await;
    v["model"] = Value::String(call.model.name.clone());
    if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
        u.insert("cost_micros".into(), cost.into());
    }
    Ok(json_response(&call, &v, cost))
}

/// The provider's whole JSON answer. A failure here settles the request at
/// its reserved amount: the provider answered, so it billed, but its usage
/// was not read.
async fn read_json(call: &mut Call, upstream: reqwest::Response) -> Result<Value, GatewayError> {
    let provider = call.model.provider.clone();
    let bytes = match tokio::time::timeout(provider.timeout, upstream.bytes()).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(GatewayError::new(502, format!("reading provider {}: {e}", provider.name)));
        }
        Err(_) => {
            return Err(GatewayError::new(
                504,
                format!("provider {} stalled mid-answer", provider.name),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::new(502, format!("provider {} sent invalid JSON: {e}", provider.name))
    })
}

/// Headers every answer carries: the output limit qlaud lowered, if it did.
fn common_headers(call: &Call, mut b: http::response::Builder) -> http::response::Builder {
    if call.admission.clamped {
        // The client's own stop reason (max_tokens / length) tells it the
        // answer was cut; this says why.
        b = b.header("qlaud-max-tokens-clamped", call.admission.max_output_tokens);
    }
    b
}

fn json_response(call: &Call, v: &Value, cost: i64) -> Response<Body> {
    let body = serde_json::to_vec(v).expect("a JSON value serializes");
    common_headers(call, Response::builder())
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("qlaud-cost-micros", cost)
        .body(Body::with_content(body))
        .expect("a valid response")
}

fn sse_response(call: &Call, body: Body) -> Response<Body> {
    common_headers(call, Response::builder())
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("a valid response")
}

/// A non-streamed answer from a provider of the other shape.
async fn json_translated(
    mut call: Call,
    upstream: reqwest::Response,
    decode: fn(&Value) -> Completion,
) -> Result<Response<Body>, GatewayError> {
    let v = read_json(&mut call, upstream).await?;
    let c = decode(&v);
    let cost = call.settle(200, c.usage).await;
    let body = ClientEncoder::completion(call.shape, &c, &call.model.name, cost);
    Ok(json_response(&call, &body, cost))
}
