//! The endpoints a job may call: checked at submission as the endpoint
//! would check them, and called in-process with the submitting key's
//! identity when the job runs.

use std::sync::Arc;

use dropshot::Body;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use qlaud_api::{
    ChatCompletionRequest, CreateThreadMessageRequest, EmbeddingRequest, MessagesRequest,
    ResponsesRequest,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::assemble::{self, Form};
use crate::auth::Caller;
use crate::config::{Model, ModelKind, ProviderKind};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gateway::{self, error::GatewayError, worst_case};
use crate::meter::{self, estimate::Estimate};

/// A synchronous JSON endpoint a job may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    ChatCompletions,
    Responses,
    Embeddings,
    ThreadMessages(String),
}

/// A job's call at worst: its model, the meter's name for its endpoint and
/// its estimate, as its handler would reserve them.
pub struct WorstCase {
    pub model: Arc<Model>,
    pub endpoint: meter::Endpoint,
    pub estimate: Estimate,
}

/// What the endpoint answered: its status and JSON body, and the cost the
/// gateway reported.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub cost_micros: i64,
    /// The answer stopped short of its end (the job was cancelled, or the
    /// provider's stream broke off).
    pub partial: bool,
}

fn parse_body<T: DeserializeOwned>(body: &Value) -> Result<T> {
    serde_json::from_value(body.clone())
        .map_err(|e| Error::invalid(format!("body is not a valid request of this endpoint: {e}")))
}

/// A gateway refusal at submission, as qlaud's own 400/404.
fn refused(e: GatewayError) -> Error {
    match e.status {
        404 => Error::invalid(format!("body: {}", e.message)),
        s if (400..500).contains(&s) => Error::invalid(format!("body: {}", e.message)),
        _ => Error::Internal(e.message),
    }
}

impl Endpoint {
    pub fn parse(path: &str) -> Result<Endpoint> {
        let path = path.split('?').next().unwrap_or(path);
        Ok(match path {
            "/v1/messages" => Endpoint::Messages,
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/responses" => Endpoint::Responses,
            "/v1/embeddings" => Endpoint::Embeddings,
            _ => match path
                .strip_prefix("/v1/threads/")
                .and_then(|rest| rest.strip_suffix("/messages"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => Endpoint::ThreadMessages(id.to_string()),
                None => {
                    return Err(Error::invalid(format!(
                        "endpoint {path:?} cannot run as a job; use /v1/messages, \
                         /v1/chat/completions, /v1/responses, /v1/embeddings or \
                         /v1/threads/{{thread_id}}/messages"
                    )));
                }
            },
        })
    }

    /// Refuses at submission what the endpoint would refuse as malformed:
    /// a body of the wrong shape, an unknown or unpriced model, a stream,
    /// a thread the caller cannot reach. Returns what the call will cost at
    /// worst, to hold until it runs.
    pub async fn check(&self, ctx: &Context, caller: &Caller, body: &Value) -> Result<WorstCase> {
        if !body.is_object() {
            return Err(Error::invalid("body must be a JSON object: the endpoint's request body"));
        }
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(Error::invalid(
                "body: \"stream\": true cannot run as a job (jobs are polled); leave it out",
            ));
        }
        // Held for the call as the job makes it: streamed.
        let streamed = self.streamed(body);
        let body = &streamed;
        match self {
            Endpoint::Messages => {
                let req: MessagesRequest = parse_body(body)?;
                let model = ctx.gateway.model(&req.model, ModelKind::Chat).map_err(refused)?;
                let estimate = worst_case::messages(&model, &req).map_err(refused)?;
                Ok(WorstCase { model, endpoint: meter::Endpoint::Messages, estimate })
            }
            Endpoint::ChatCompletions => {
                let req: ChatCompletionRequest = parse_body(body)?;
                let model = ctx.gateway.model(&req.model, ModelKind::Chat).map_err(refused)?;
                let estimate = worst_case::chat_completions(&model, &req).map_err(refused)?;
                Ok(WorstCase { model, endpoint: meter::Endpoint::ChatCompletions, estimate })
            }
            Endpoint::Responses => {
                let req: ResponsesRequest = parse_body(body)?;
                let model = ctx.gateway.model(&req.model, ModelKind::Chat).map_err(refused)?;
                let perplexity = model.provider.kind == ProviderKind::Perplexity;
                crate::dialects::responses::check(&req, perplexity).map_err(refused)?;
                // For Perplexity this also checks its tools and bounds its loop.
                let estimate = worst_case::responses(&model, &req).map_err(refused)?;
                Ok(WorstCase { model, endpoint: meter::Endpoint::Responses, estimate })
            }
            Endpoint::Embeddings => {
                let req: EmbeddingRequest = parse_body(body)?;
                let model = ctx.gateway.model(&req.model, ModelKind::Embedding).map_err(refused)?;
                let estimate = worst_case::embeddings(&model, &req);
                Ok(WorstCase { model, endpoint: meter::Endpoint::Embeddings, estimate })
            }
            Endpoint::ThreadMessages(thread_id) => {
                let req: CreateThreadMessageRequest = parse_body(body)?;
                // Another key's thread reads as missing, as everywhere.
                let access = crate::threads::access(caller);
                let thread =
                    ctx.store.get_thread(access, thread_id).await.map_err(|e| match e {
                        Error::NotFound { .. } => {
                            Error::invalid(format!("endpoint: no thread {thread_id:?}"))
                        }
                        e => e,
                    })?;
                let Some(name) = req.model.as_deref().or(thread.model.as_deref()) else {
                    return Err(Error::invalid(
                        "body: the turn names no model and the thread has no default: send `model`",
                    ));
                };
                let model = ctx.gateway.model(name, ModelKind::Chat).map_err(refused)?;
                let estimate = worst_case::body(&model, body, req.max_tokens).map_err(refused)?;
                Ok(WorstCase { model, endpoint: meter::Endpoint::Threads, estimate })
            }
        }
    }

    /// The form a model endpoint's stream comes in; `None` for the
    /// endpoints that do not stream their provider call for a job
    /// (embeddings have no stream; a thread turn streams its rounds itself).
    fn form(&self) -> Option<Form> {
        match self {
            Endpoint::Messages => Some(Form::Messages),
            Endpoint::ChatCompletions => Some(Form::ChatCompletions),
            Endpoint::Responses => Some(Form::Responses),
            Endpoint::Embeddings | Endpoint::ThreadMessages(_) => None,
        }
    }

    /// The body as the job sends it: a model endpoint's streamed, so that
    /// a cancellation can stop the provider call; a chat completion's
    /// stream asked to end with its usage, which its whole answer carries.
    fn streamed(&self, body: &Value) -> Value {
        let mut body = body.clone();
        if let (Some(form), Some(fields)) = (self.form(), body.as_object_mut()) {
            fields.insert("stream".into(), Value::Bool(true));
            if form == Form::ChatCompletions {
                let opts = fields
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !opts.is_object() {
                    *opts = Value::Object(Default::default());
                }
                opts["include_usage"] = Value::Bool(true);
            }
        }
        body
    }

    /// Calls the endpoint's handler as `caller`, and reads its answer: a
    /// model endpoint's streamed answer read back into the body its
    /// synchronous call answers, or as far as it came when the job was
    /// cancelled (`Answer::partial`). `cost_micros` is what the call was
    /// settled at, once it is.
    pub async fn call(&self, ctx: &Context, caller: Caller, body: Value) -> Answer {
        let body = self.streamed(&body);
        let headers = HeaderMap::new();
        let outcome = match self {
            Endpoint::Messages => match parse_body(&body) {
                Ok(req) => gateway::messages_as(ctx, caller, &headers, req).await,
                Err(e) => Err(e.into()),
            },
            Endpoint::ChatCompletions => match parse_body(&body) {
                Ok(req) => gateway::chat_completions_as(ctx, caller, &headers, req).await,
                Err(e) => Err(e.into()),
            },
            Endpoint::Responses => match parse_body(&body) {
                Ok(req) => gateway::responses_as(ctx, caller, &headers, req).await,
                Err(e) => Err(e.into()),
            },
            Endpoint::Embeddings => match parse_body(&body) {
                Ok(req) => gateway::embeddings_as(ctx, caller, req).await,
                Err(e) => Err(e.into()),
            },
            Endpoint::ThreadMessages(thread_id) => match parse_body(&body) {
                Ok(req) => {
                    crate::threads::turn::create_as(ctx, caller, &headers, thread_id, req).await
                }
                Err(e) => Err(e.into()),
            },
        };
        match (outcome, self.form()) {
            (Ok(response), Some(form)) if is_stream(&response) => {
                let read = assemble::read(form, response.into_body()).await;
                if let Some(message) = read.error {
                    // The provider's stream broke off: its error, in the
                    // endpoint's shape, as the synchronous call's would be.
                    let status = if message.contains("restarting") { 503 } else { 502 };
                    let mut answer = self.error(GatewayError::new(status, message));
                    answer.partial = true;
                    return answer;
                }
                Answer { status: 200, body: read.body, cost_micros: 0, partial: !read.complete }
            }
            (Ok(response), _) => {
                let mut answer = read(response).await;
                // A turn whose round was stopped (its job cancelled) is
                // stored as far as it came, without a stop reason.
                answer.partial = matches!(self, Endpoint::ThreadMessages(_))
                    && answer.status == 200
                    && answer.body.get("stop_reason").is_some_and(Value::is_null);
                answer
            }
            (Err(e), _) => self.error(e),
        }
    }

    /// Sets the usage of an answer in the endpoint's shape to what its
    /// call was settled at (an answer stopped short carries no final
    /// count of its own).
    pub fn set_usage(&self, body: &mut Value, usage: &meter::Usage, cost: i64) {
        let usage = match self {
            Endpoint::Messages => crate::dialects::messages::usage_json(usage, Some(cost)),
            Endpoint::ChatCompletions => crate::dialects::chat::usage_json(usage, cost),
            Endpoint::Responses => crate::dialects::responses::render::usage_json(usage, cost),
            Endpoint::Embeddings | Endpoint::ThreadMessages(_) => return,
        };
        if let Some(fields) = body.as_object_mut() {
            fields.insert("usage".into(), usage);
        }
    }

    /// An error in the endpoint's own shape.
    pub fn error(&self, e: GatewayError) -> Answer {
        let status = e.status;
        let body = match self {
            Endpoint::Messages => serde_json::to_value(e.into_anthropic()),
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Embeddings => {
                serde_json::to_value(e.into_openai())
            }
            // qlaud's own error body, as dropshot writes it.
            Endpoint::ThreadMessages(_) => {
                let http = e.into_http();
                Ok(serde_json::json!({
                    "error_code": http.error_code,
                    "message": http.external_message,
                }))
            }
        };
        Answer { status, body: body.unwrap_or(Value::Null), cost_micros: 0, partial: false }
    }
}

/// A handler's JSON answer: status, body and the `qlaud-cost-micros` it
/// carries.
async fn read(response: Response<Body>) -> Answer {
    let status = response.status().as_u16();
    let cost_micros = response
        .headers()
        .get("qlaud-cost-micros")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Answer {
                status: 500,
                body: serde_json::json!({"message": format!("reading the answer: {e}")}),
                cost_micros,
                partial: false,
            };
        }
    };
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer { status, body, cost_micros, partial: false }
}

fn is_stream(response: &Response<Body>) -> bool {
    response.status().is_success()
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
}
