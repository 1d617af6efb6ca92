//! The API shapes clients speak (dialects): each module parses its
//! requests into the internal representation (`crate::providers::ir`) and
//! renders answers back, and does nothing else: no I/O, no metering. A
//! same-dialect call (a Claude model on `/v1/messages`, a GPT model on
//! `/v1/chat/completions` or `/v1/responses`) never comes here: it passes
//! through untouched. Adding a dialect is one module here, its variant of
//! [`Shape`] and its handler in `gateway`.

pub mod chat;
pub mod messages;
pub mod responses;

use bytes::Bytes;
use serde_json::Value;

use crate::config::Model;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::Endpoint;
use crate::providers::ir::{Completion, Event};
use responses::render as responses_render;

/// Which API shape the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Messages,
    ChatCompletions,
    /// OpenAI's Embeddings API (JSON only; errors in OpenAI's shape).
    Embeddings,
    Responses,
    /// A thread turn (`POST /v1/threads/{id}/messages`): qlaud's own
    /// endpoint, streamed in Anthropic's message-event form.
    Threads,
}

impl Shape {
    pub fn endpoint(self) -> Endpoint {
        match self {
            Shape::Messages => Endpoint::Messages,
            Shape::ChatCompletions => Endpoint::ChatCompletions,
            Shape::Embeddings => Endpoint::Embeddings,
            Shape::Responses => Endpoint::Responses,
            Shape::Threads => Endpoint::Threads,
        }
    }
}

/// Internal events written in the client's shape.
pub(crate) enum ClientEncoder {
    Anthropic(messages::Encoder),
    OpenAi(chat::Encoder),
    Responses(responses_render::Encoder),
}

impl ClientEncoder {
    pub fn new(shape: Shape, model: &Model, wants_usage: bool) -> ClientEncoder {
        let prices = model.prices.unwrap_or_default();
        match shape {
            Shape::Messages | Shape::Threads => {
                ClientEncoder::Anthropic(messages::Encoder::new(&model.name, prices))
            }
            Shape::ChatCompletions | Shape::Embeddings => {
                ClientEncoder::OpenAi(chat::Encoder::new(&model.name, prices, wants_usage))
            }
            Shape::Responses => {
                ClientEncoder::Responses(responses_render::Encoder::new(&model.name, prices))
            }
        }
    }

    /// A local count of the prompt for Anthropic's `message_start` (see
    /// `messages::Encoder::start_input`); OpenAI's chunks carry
    /// no input count before the end, so it is not needed there.
    pub fn start_input(&mut self, tokens: u64) {
        if let ClientEncoder::Anthropic(e) = self {
            e.start_input(tokens);
        }
    }

    pub fn encode(&mut self, event: Event) -> Vec<Bytes> {
        match self {
            ClientEncoder::Anthropic(e) => e.encode(event),
            ClientEncoder::OpenAi(e) => e.encode(event),
            ClientEncoder::Responses(e) => e.encode(event),
        }
    }

    /// Fields every Responses object of the stream carries (what qlaud's
    /// response state decides: `store`, `previous_response_id`, …).
    pub fn echo(&mut self, fields: &serde_json::Map<String, Value>) {
        if let ClientEncoder::Responses(e) = self {
            e.echo(fields.clone());
        }
    }

    /// The final response object of a Responses stream, once it has ended.
    pub fn final_response(&mut self) -> Option<Value> {
        match self {
            ClientEncoder::Responses(e) => e.final_response(),
            _ => None,
        }
    }

    /// A whole answer in `shape`.
    pub fn completion(shape: Shape, c: &Completion, model: &str, cost: i64) -> Value {
        match shape {
            Shape::Messages | Shape::Threads => messages::message(c, model, cost),
            Shape::ChatCompletions | Shape::Embeddings => {
                chat::chat_completion(c, model, chrono::Utc::now().timestamp(), cost)
            }
            Shape::Responses => {
                responses_render::response(c, model, chrono::Utc::now().timestamp(), cost)
            }
        }
    }

    /// An error event in this encoder's shape, for a stream that broke off
    /// (Responses events are numbered, so the encoder's count goes on).
    pub fn error(&mut self, shape: Shape, err: GatewayError) -> Bytes {
        match self {
            ClientEncoder::Responses(e) => e.error(err),
            _ => ClientEncoder::error_event(shape, err),
        }
    }

    /// An error event in `shape`, for a stream that broke off.
    pub fn error_event(shape: Shape, err: GatewayError) -> Bytes {
        match shape {
            Shape::Responses => responses_render::error_event(err, 0),
            Shape::Messages | Shape::Threads => sse::event(
                Some("error"),
                &serde_json::to_string(&err.into_anthropic()).unwrap_or_default(),
            ),
            Shape::ChatCompletions | Shape::Embeddings => {
                sse::event(None, &serde_json::to_string(&err.into_openai()).unwrap_or_default())
            }
        }
    }
}
