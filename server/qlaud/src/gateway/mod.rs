//! The model request path: authenticate → resolve the model → call the
//! provider (or answer offline) → answer the client as JSON or a stream →
//! hand the usage to `meter`.
//!
//! Same-shape calls pass through: qlaud reads only what it needs (model,
//! limits, usage) and forwards everything else untouched, stream events byte
//! for byte except the few it annotates with cost.

mod audio;
pub mod count_tokens;
mod echo;
mod embeddings;
pub mod error;
pub mod responses;
mod retry;
pub mod round;
pub mod sse;
pub(crate) mod stream;
pub mod video;
pub mod worst_case;

pub use crate::dialects::Shape;
use crate::dialects::{self, ClientEncoder};
pub use audio::{elevenlabs_speech, listen, speech, transcription};
pub use embeddings::{embeddings, embeddings_as};
pub use responses::{create as responses, create_as as responses_as};
use stream::{Translator, stream};
pub use video::{create_video, get_video, get_video_content};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dropshot::Body;
use http::{HeaderMap, Response, StatusCode};
use qlaud_api::{
    ChatCompletionRequest, MessagesRequest, ModelBody, ModelInfo, ModelList, ModelPricing, Usd,
};
use serde_json::Value;

use crate::auth::Caller;
use crate::config::{Catalog, Model, ModelKind, ProviderKind};
use crate::context::Context;
use crate::error::RateDialect;
use crate::meter::estimate::{self, Estimate, PromptBound};
use crate::meter::ledger::Admission;
use crate::meter::{self, Metered, Usage};
use crate::providers::ir::{self, Completion};
use crate::providers::{self, ChatProvider, anthropic, openai};
use crate::units::{Quantities, Unit};
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

    pub(crate) fn client(&self, model: &Model) -> &reqwest::Client {
        &self.clients[&model.provider.name]
    }

    /// A model that may be served for `kind`: known, of that kind, and
    /// priced.
    pub fn model(&self, name: &str, kind: ModelKind) -> Result<Arc<Model>, GatewayError> {
        let model = self.catalog.model(name).ok_or_else(|| GatewayError::model_not_found(name))?;
        if model.kind != kind {
            let what = match model.kind {
                ModelKind::Chat => {
                    "a chat model: call it through /v1/messages or /v1/chat/completions"
                }
                ModelKind::Embedding => "an embedding model: call it through /v1/embeddings",
                ModelKind::Transcription => {
                    "a speech-to-text model: call it through /v1/audio/transcriptions (or \
                     /v1/listen for Deepgram's)"
                }
                ModelKind::Speech => {
                    "a text-to-speech model: call it through /v1/audio/speech (or \
                     /v1/text-to-speech/{voice_id} for ElevenLabs')"
                }
                ModelKind::Video => "a video model: call it through /v1/videos",
            };
            return Err(GatewayError::bad_request(format!("model {name:?} is {what}"))
                .with_code("model_not_supported"));
        }
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
                    context_window: m.context_window,
                    pricing: ModelPricing {
                        input_per_mtok_usd: usd(p.of(Unit::INPUT_TOKENS)),
                        output_per_mtok_usd: usd(p.of(Unit::OUTPUT_TOKENS)),
                        cache_read_per_mtok_usd: usd(p.of(Unit::CACHE_READ_TOKENS)),
                        cache_write_per_mtok_usd: usd(p.of(Unit::CACHE_WRITE_TOKENS)),
                        units: p
                            .iter()
                            .map(|(u, price)| (u.as_str().to_string(), usd(price)))
                            .collect(),
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

/// A metered model call and the API shape its client speaks.
struct Call {
    metered: Metered,
    shape: Shape,
    /// What a Responses API answer keeps once it is whole.
    keep: Option<responses::state::Keep>,
    /// The shutdown a stream's task answers to.
    drain: Arc<crate::shutdown::Drain>,
}

impl Call {
    /// Authenticated, resolved and now admitted against the key's cap.
    async fn admit(
        ctx: &Context,
        caller: Caller,
        model: Arc<Model>,
        shape: Shape,
        streamed: bool,
        started: Instant,
        estimate: &Estimate,
    ) -> Result<Call, GatewayError> {
        let endpoint = shape.endpoint();
        let metered =
            Metered::admit(&ctx.meter, &caller, model, endpoint, streamed, started, estimate)
                .await?;
        Ok(Call { metered, shape, keep: None, drain: ctx.drain.clone() })
    }

    /// A media call: metered under its own endpoint; its errors are in
    /// OpenAI's shape, its answers JSON or binary.
    async fn admit_media(
        ctx: &Context,
        caller: Caller,
        model: Arc<Model>,
        endpoint: crate::meter::Endpoint,
        started: Instant,
        estimate: &Estimate,
    ) -> Result<Call, GatewayError> {
        let metered =
            Metered::admit(&ctx.meter, &caller, model, endpoint, false, started, estimate).await?;
        Ok(Call { metered, shape: Shape::Embeddings, keep: None, drain: ctx.drain.clone() })
    }

    fn model(&self) -> &Arc<Model> {
        &self.metered.model
    }

    fn admission(&self) -> &Admission {
        &self.metered.admission
    }

    async fn settle(&mut self, status: u16, usage: Usage) -> i64 {
        self.metered.settle(status, usage).await
    }

    /// Settles at `usage` and, beside the tokens, the `extra` units the
    /// provider reported (its built-in tool calls).
    async fn settle_with(&mut self, status: u16, usage: Usage, extra: Quantities) -> i64 {
        if extra.is_empty() {
            return self.settle(status, usage).await;
        }
        let mut q = meter::quantities(&usage);
        for (unit, n) in extra.iter() {
            // The model's price table bounds the units a call carries.
            let _ = q.set(unit, n);
        }
        self.metered.settle_units(status, q).await
    }

    /// Sets what the client's request decides on a whole response object
    /// and keeps it, when the call keeps state (Responses API calls).
    async fn keep(&mut self, response: &mut Value) {
        if let Some(keep) = self.keep.take() {
            keep.annotate(response);
            let request_id = self.admission().reservation_id.clone();
            keep.save(response, &request_id).await;
        }
    }
}

/// The output-multiplying fields of a forwarded body, as choices.
fn choices(fields: &serde_json::Map<String, Value>) -> Result<u64, GatewayError> {
    estimate::choices(fields).map_err(|field| {
        GatewayError::bad_request(format!(
            "{field} must be a whole number from 1 to {}",
            estimate::MAX_CHOICES
        ))
    })
}

/// The worst case of a body forwarded as the client sent it: every field
/// (unknown ones too) counts toward the prompt, and its multipliers apply.
fn pass_through_estimate(
    model: &Model,
    messages: &[Value],
    system: Option<&Value>,
    extra: &serde_json::Map<String, Value>,
    max_output: u64,
) -> Result<Estimate, GatewayError> {
    let mut bound = PromptBound::default();
    bound.text_field("model", &model.upstream);
    bound.messages("messages", messages);
    if let Some(system) = system {
        bound.field("system", system);
    }
    bound.fields(extra);
    Ok(Estimate {
        prompt_tokens: bound.finish(model.context_window),
        max_output,
        choices: choices(extra)?,
        extra_output: estimate::extra_output(extra),
        units: Default::default(),
    })
}

/// The worst case of a translated body: one choice, as the translators
/// carry no multipliers.
fn translation_estimate(model: &Model, body: &Value, max_output: u64) -> Estimate {
    let prompt_tokens = PromptBound::body(body).finish(model.context_window);
    Estimate { prompt_tokens, max_output, choices: 1, extra_output: 0, units: Default::default() }
}

/// Where a request goes once its caller and model are known.
struct Route<'a> {
    ctx: &'a Context,
    headers: &'a HeaderMap,
    caller: Caller,
    model: Arc<Model>,
    shape: Shape,
    started: Instant,
    /// Response state to keep (Responses API calls).
    keep: Option<responses::state::Keep>,
}

impl Route<'_> {
    async fn admit(&self, streamed: bool, estimate: &Estimate) -> Result<Call, GatewayError> {
        let (caller, model) = (self.caller.clone(), self.model.clone());
        let mut call =
            Call::admit(self.ctx, caller, model, self.shape, streamed, self.started, estimate)
                .await?;
        call.keep.clone_from(&self.keep);
        Ok(call)
    }

    /// A call in another dialect than the provider's, through the internal
    /// representation: the provider's own request is rendered from `req`,
    /// reserved, sent, and its answer rendered in the client's dialect.
    /// `start_input`: a local count of the prompt for clients that read it
    /// before the provider reports one (see `ClientEncoder::start_input`).
    async fn translated(
        self,
        req: ir::Request,
        wants_usage: bool,
        start_input: Option<tokio::task::JoinHandle<u64>>,
    ) -> Result<Response<Body>, GatewayError> {
        let streamed = req.stream;
        let Some(provider) = providers::chat(self.model.provider.kind) else {
            // The offline model reads exactly the internal request.
            let v =
                serde_json::to_value(&req).map_err(|e| GatewayError::new(500, e.to_string()))?;
            let call = self
                .admit(streamed, &translation_estimate(&self.model, &v, req.max_tokens))
                .await?;
            let reply = providers::echo::reply(&req, call.admission().max_output_tokens);
            return echo::answer(call, reply, wants_usage).await;
        };
        let mut body = provider.body(&req, &self.model);
        let estimate = translation_estimate(&self.model, &body, req.max_tokens);
        let mut call = self.admit(streamed, &estimate).await?;
        provider.set_max_tokens(&mut body, call.admission().max_output_tokens);
        let client = self.ctx.gateway.client(&self.model);
        let http = provider.post(client, &self.model, self.headers, to_vec(&body)?)?;
        let upstream = send(&mut call, http).await?;
        if !streamed {
            return json_translated(call, upstream, provider).await;
        }
        let mut meter = Translator::new(&call, provider.decoder(), wants_usage);
        if let Some(count) = start_input {
            meter = meter.start_input(count.await.unwrap_or(0));
        }
        Ok(stream(call, upstream, meter))
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<MessagesRequest>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let req = body.read().await?;
    messages_as(ctx, caller, headers, req).await
}

/// `POST /v1/messages` for a caller already known (a job runs it for the
/// key that created it, which never hands qlaud its secret again).
pub async fn messages_as(
    ctx: &Context,
    caller: Caller,
    headers: &HeaderMap,
    mut req: MessagesRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let model = ctx.gateway.model(&req.model, ModelKind::Chat)?;
    let asked = req.max_tokens;
    let mut attempts = retry::Attempts::new(&ctx.gateway, model);
    loop {
        let model = attempts.model().clone();
        let more = attempts.more();
        let result = messages_to(ctx, &caller, headers, &mut req, asked, model, started, more);
        match result.await {
            Ok(answer) => return Ok(answer),
            Err(err) => attempts.next(err).await?,
        }
    }
}

/// One attempt of a `/v1/messages` request at `model`. `asked`: the
/// client's output limit; `more`: whether another attempt may follow (so
/// `req` must stay whole).
#[allow(clippy::too_many_arguments)]
async fn messages_to(
    ctx: &Context,
    caller: &Caller,
    headers: &HeaderMap,
    req: &mut MessagesRequest,
    asked: Option<u64>,
    model: Arc<Model>,
    started: Instant,
    more: bool,
) -> Result<Response<Body>, GatewayError> {
    let streamed = req.stream.unwrap_or(false);
    // Clients ask for far more output than models allow (the Vercel AI SDK
    // sends 128000 for every Claude model): cap at the model's limit, and
    // fill it in when missing, since Anthropic requires it.
    let wanted = asked.unwrap_or(model.max_output_tokens).min(model.max_output_tokens);
    let caller = caller.clone();
    let route = Route { ctx, headers, caller, model, shape: Shape::Messages, started, keep: None };
    if route.model.provider.kind != ProviderKind::Anthropic {
        req.max_tokens = asked;
        let ir = dialects::messages::parse(req, wanted)?;
        // Anthropic's clients read input tokens from `message_start`, before
        // other providers count any: estimated meanwhile (billing uses the
        // provider's).
        let http_provider = route.model.provider.kind != ProviderKind::Echo;
        let start_input = (streamed && http_provider).then(|| {
            // The last attempt hands the prompt over rather than copy it.
            let req = if more {
                req.clone()
            } else {
                MessagesRequest {
                    model: String::new(),
                    messages: std::mem::take(&mut req.messages),
                    max_tokens: None,
                    system: req.system.take(),
                    stream: None,
                    extra: std::mem::take(&mut req.extra),
                }
            };
            count_tokens::spawn_estimate(route.model.clone(), req)
        });
        return route.translated(ir, false, start_input).await;
    }
    // The same dialect: the client's body goes on with only the model's
    // upstream id and the reserved limit changed.
    let model = route.model.clone();
    let estimate =
        pass_through_estimate(&model, &req.messages, req.system.as_ref(), &req.extra, wanted)?;
    let mut call = route.admit(streamed, &estimate).await?;
    req.model.clone_from(&model.upstream);
    req.max_tokens = Some(call.admission().max_output_tokens);
    let http = anthropic::request(ctx.gateway.client(&model), &model, headers, to_vec(req)?)?;
    let upstream = send(&mut call, http).await?;
    if streamed {
        let meter = anthropic::StreamTap::new(&model, call.admission().unreported);
        Ok(stream(call, upstream, meter))
    } else {
        json_answer(call, upstream, anthropic::usage).await
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    ctx: &Context,
    headers: &HeaderMap,
    body: ModelBody<ChatCompletionRequest>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let req = body.read().await?;
    chat_completions_as(ctx, caller, headers, req).await
}

/// `POST /v1/chat/completions` for a caller already known (jobs).
pub async fn chat_completions_as(
    ctx: &Context,
    caller: Caller,
    headers: &HeaderMap,
    mut req: ChatCompletionRequest,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let model = ctx.gateway.model(&req.model, ModelKind::Chat)?;
    let asked = (req.max_tokens, req.max_completion_tokens);
    let mut attempts = retry::Attempts::new(&ctx.gateway, model);
    loop {
        let model = attempts.model().clone();
        let result = chat_completions_to(ctx, &caller, headers, &mut req, asked, model, started);
        match result.await {
            Ok(answer) => return Ok(answer),
            Err(err) => attempts.next(err).await?,
        }
    }
}

/// One attempt of a `/v1/chat/completions` request at `model`. `asked`:
/// the client's `max_tokens` and `max_completion_tokens`, as it sent them.
async fn chat_completions_to(
    ctx: &Context,
    caller: &Caller,
    headers: &HeaderMap,
    req: &mut ChatCompletionRequest,
    asked: (Option<u64>, Option<u64>),
    model: Arc<Model>,
    started: Instant,
) -> Result<Response<Body>, GatewayError> {
    (req.max_tokens, req.max_completion_tokens) = asked;
    let streamed = req.stream.unwrap_or(false);
    let wanted = chat_max_tokens(req, &model);
    let wants_usage = wants_usage(&req.extra);
    let choices = choices(&req.extra)?;
    let caller = caller.clone();
    let route =
        Route { ctx, headers, caller, model, shape: Shape::ChatCompletions, started, keep: None };
    let kind = route.model.provider.kind;
    if !matches!(kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible) {
        if choices > 1 {
            return Err(GatewayError::bad_request(format!(
                "model {:?} answers one choice per request: n (or best_of) above 1 is not \
                 supported",
                route.model.name
            )));
        }
        let ir = dialects::chat::parse(req, wanted)?;
        return route.translated(ir, wants_usage, None).await;
    }
    // The same dialect: forwarded as sent, with the model's upstream id and
    // the reserved limit.
    let model = route.model.clone();
    let estimate = pass_through_estimate(&model, &req.messages, None, &req.extra, wanted)?;
    let mut call = route.admit(streamed, &estimate).await?;
    let max_tokens = call.admission().max_output_tokens;
    req.model.clone_from(&model.upstream);
    // The provider gets exactly the limit that was reserved, in every field
    // the client used (a provider honouring either sees the same), or with
    // none, in the field it reads.
    let both = req.max_tokens.is_some() && req.max_completion_tokens.is_some();
    if both || req.max_completion_tokens.is_some() {
        req.max_completion_tokens = Some(max_tokens);
    }
    if both || req.max_tokens.is_some() {
        req.max_tokens = Some(max_tokens);
    }
    if req.max_tokens.is_none() && req.max_completion_tokens.is_none() {
        if kind == ProviderKind::Openai {
            req.max_completion_tokens = Some(max_tokens);
        } else {
            req.max_tokens = Some(max_tokens);
        }
    }
    if streamed {
        // Usage arrives only when asked for: always ask.
        let opts =
            req.extra.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
        if !opts.is_object() {
            *opts = Value::Object(Default::default());
        }
        opts["include_usage"] = Value::Bool(true);
    }
    let http = openai::request(ctx.gateway.client(&model), &model, to_vec(req)?)?;
    let upstream = send(&mut call, http).await?;
    if streamed {
        let meter = openai::StreamTap::new(&model, wants_usage, call.admission().unreported);
        Ok(stream(call, upstream, meter))
    } else {
        json_answer(call, upstream, openai::usage).await
    }
}

fn to_vec(v: &impl serde::Serialize) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(v).map_err(|e| GatewayError::new(500, e.to_string()))
}

/// The output limit of a chat request: the larger of the two fields the
/// client may use (a provider may honour either), capped at the model's.
fn chat_max_tokens(req: &ChatCompletionRequest, model: &Model) -> u64 {
    match (req.max_completion_tokens, req.max_tokens) {
        (None, None) => model.max_output_tokens,
        (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)).min(model.max_output_tokens),
    }
}

fn wants_usage(extra: &serde_json::Map<String, Value>) -> bool {
    extra.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool)
        == Some(true)
}

/// Sends the upstream request. A provider error becomes the client's error,
/// and the request is settled at nothing: providers do not bill failures.
/// Failures before the provider answered (429, 5xx, timeouts, no
/// connection) are marked retryable, so [`retry::Attempts`] may try again.
async fn send(
    call: &mut Call,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, GatewayError> {
    let provider = call.model().provider.clone();
    call.metered.sent();
    let result = tokio::time::timeout(provider.timeout, req.send()).await;
    let failure = match result {
        Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let after = retry::retry_after(resp.headers());
            let body = tokio::time::timeout(provider.timeout, resp.bytes()).await;
            let body = body.ok().and_then(Result::ok).unwrap_or_default();
            let openai_shaped = provider.kind != ProviderKind::Anthropic;
            let err = GatewayError::from_upstream(&provider.name, openai_shaped, status, &body);
            if status == 429 || status >= 500 { err.retryable(after) } else { err }
        }
        Err(_) => GatewayError::new(
            504,
            format!(
                "provider {} did not answer within {} s",
                provider.name,
                provider.timeout.as_secs()
            ),
        )
        .retryable(None),
        Ok(Err(e)) if e.is_timeout() => {
            GatewayError::new(504, format!("provider {} timed out: {e}", provider.name))
                .retryable(None)
        }
        Ok(Err(e)) => GatewayError::new(
            502,
            format!("could not reach provider {}: {}", provider.name, error_chain(&e)),
        )
        .retryable(None),
    };
    call.metered.settle_unbilled(failure.status).await;
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

/// The usage an answer reports, or (when it reports none) its reserved
/// prompt bound and what its content can stand for.
fn answer_usage(call: &Call, v: &Value, reported: impl Fn(&Value) -> Usage) -> Usage {
    match v.get("usage").filter(|u| u.is_object()) {
        Some(u) => reported(u),
        None => {
            let seen = estimate::text_tokens(&v["content"])
                + estimate::text_tokens(&v["choices"])
                + estimate::text_tokens(&v["output"]);
            call.admission().unreported.usage(None, seen)
        }
    }
}

/// A non-streamed provider answer in the client's shape: read usage, add
/// cost, name the model as the client did, settle, answer.
async fn json_answer(
    call: Call,
    upstream: reqwest::Response,
    usage_of: fn(&Value) -> Usage,
) -> Result<Response<Body>, GatewayError> {
    json_answer_with(call, upstream, usage_of, |_| Quantities::default()).await
}

/// [`json_answer`] for a provider that bills units beside tokens, read from
/// the answer's `usage` by `units_of`.
async fn json_answer_with(
    mut call: Call,
    upstream: reqwest::Response,
    usage_of: fn(&Value) -> Usage,
    units_of: fn(&Value) -> Quantities,
) -> Result<Response<Body>, GatewayError> {
    let mut v = read_json(&mut call, upstream).await?;
    let usage = answer_usage(&call, &v, usage_of);
    let cost = call.settle_with(200, usage, units_of(&v["usage"])).await;
    v["model"] = Value::String(call.model().name.clone());
    if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
        u.insert("cost_micros".into(), cost.into());
    }
    call.keep(&mut v).await;
    Ok(json_response(&call, &v, cost))
}

/// The provider's whole JSON answer. A failure here settles the request at
/// its reserved amount: the provider answered, so it billed, but its usage
/// was not read.
async fn read_json(call: &mut Call, upstream: reqwest::Response) -> Result<Value, GatewayError> {
    let provider = call.model().provider.clone();
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

/// Headers every answer carries: the output limit qlaud lowered, if it
/// did, and the key's rate limits in the headers of the API the client
/// speaks, as that API sends them on every answer (only for limits set).
fn common_headers(call: &Call, mut b: http::response::Builder) -> http::response::Builder {
    let admission = call.admission();
    if admission.clamped {
        // The client's own stop reason (max_tokens / length) tells it the
        // answer was cut; this says why.
        b = b.header("qlaud-max-tokens-clamped", admission.max_output_tokens);
    }
    let dialect = match call.metered.endpoint {
        meter::Endpoint::Messages => Some(RateDialect::Anthropic),
        meter::Endpoint::ChatCompletions
        | meter::Endpoint::Responses
        | meter::Endpoint::Embeddings => Some(RateDialect::OpenAi),
        // The media APIs' own providers send no such headers.
        _ => None,
    };
    if let Some(dialect) = dialect {
        admission.rate_budget.headers(dialect, |name, value| {
            b = std::mem::take(&mut b).header(name, value);
        });
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
    provider: &dyn ChatProvider,
) -> Result<Response<Body>, GatewayError> {
    let v = read_json(&mut call, upstream).await?;
    let mut c: Completion = provider.completion(&v);
    c.usage = answer_usage(&call, &v, |_| c.usage);
    let cost = call.settle(200, c.usage).await;
    let mut body = ClientEncoder::completion(call.shape, &c, &call.model().name, cost);
    call.keep(&mut body).await;
    Ok(json_response(&call, &body, cost))
}
