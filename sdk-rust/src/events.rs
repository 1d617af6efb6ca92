//! Typed stream events: Anthropic's message events, OpenAI's chat
//! completion chunks and Responses API events, read from an
//! [`SseEvent`](crate::SseEvent) with
//! [`SseEvent::message_event`](crate::SseEvent::message_event),
//! [`SseEvent::chat_chunk`](crate::SseEvent::chat_chunk) and
//! [`SseEvent::response_event`](crate::SseEvent::response_event).
//!
//! Fields the providers add later land in `extra` maps or `Unknown`
//! variants instead of failing the stream.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::types;

/// One event of `POST /v1/messages` with `"stream": true`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageEvent {
    /// The message begins: its id, model and input usage.
    MessageStart { message: types::Message },
    /// A content block (text, tool use, thinking …) begins at `index`.
    ContentBlockStart { index: u32, content_block: Map<String, Value> },
    /// More of the block at `index`.
    ContentBlockDelta { index: u32, delta: ContentDelta },
    /// The block at `index` is complete.
    ContentBlockStop { index: u32 },
    /// The stop reason and the final usage (with qlaud's `cost_micros`).
    MessageDelta { delta: MessageDeltaBody, usage: Option<DeltaUsage> },
    /// The last event.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// The provider failed mid-stream.
    Error { error: types::AnthropicErrorDetail },
    /// An event type this SDK does not know yet.
    #[serde(other)]
    Unknown,
}

/// The increment in a `content_block_delta`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentDelta {
    /// Text to append.
    TextDelta { text: String },
    /// A piece of a tool call's JSON input.
    InputJsonDelta { partial_json: String },
    /// Extended thinking to append.
    ThinkingDelta { thinking: String },
    /// The signature closing a thinking block.
    SignatureDelta { signature: String },
    /// A delta type this SDK does not know yet.
    #[serde(other)]
    Unknown,
}

/// The `delta` of a `message_delta`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct MessageDeltaBody {
    /// Why the model stopped (`end_turn`, `max_tokens`, `tool_use`, …).
    pub stop_reason: Option<String>,
    /// The stop sequence that matched, if any.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// The usage of a `message_delta`: the output so far, and what qlaud
/// charged for the whole request.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DeltaUsage {
    /// Output tokens produced.
    pub output_tokens: u64,
    /// Input tokens, when the provider repeats them here.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// What qlaud charged for the request, in micro-dollars.
    #[serde(default)]
    pub cost_micros: Option<i64>,
    /// Any other usage field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One chunk of `POST /v1/chat/completions` with `"stream": true`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ChatChunk {
    /// The completion's id (the same in every chunk).
    pub id: String,
    /// The model's public name.
    pub model: String,
    /// Unix seconds.
    pub created: i64,
    /// The choices' increments (empty in the final usage chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present in the last chunk when `stream_options.include_usage` is set,
    /// with qlaud's `cost_micros`.
    #[serde(default)]
    pub usage: Option<types::ChatUsage>,
}

/// One choice's increment.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ChunkChoice {
    /// Which choice.
    pub index: u32,
    /// What to append.
    pub delta: ChunkDelta,
    /// Set on the choice's last chunk (`stop`, `length`, `tool_calls`, …).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The increment of one choice.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ChunkDelta {
    /// `assistant` in the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// Text to append.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool-call pieces, as OpenAI sends them.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// Any other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One event of `POST /v1/responses` with `"stream": true`. Every event
/// carries a `sequence_number`, in order from 0.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum ResponseEvent {
    /// The response begins (status `in_progress`, no output yet).
    #[serde(rename = "response.created")]
    Created { sequence_number: u64, response: types::ResponseObject },
    /// The response is being generated.
    #[serde(rename = "response.in_progress")]
    InProgress { sequence_number: u64, response: types::ResponseObject },
    /// An output item (`message`, `function_call`, …) begins at
    /// `output_index`.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { sequence_number: u64, output_index: u32, item: Map<String, Value> },
    /// A content part of a message item begins.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: Map<String, Value>,
    },
    /// Text to append to a message's content part.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
    },
    /// The content part's whole text.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        content_index: u32,
        text: String,
    },
    /// A content part is complete.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: Map<String, Value>,
    },
    /// A piece of a function call's JSON arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        delta: String,
    },
    /// A function call's whole arguments.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        sequence_number: u64,
        item_id: String,
        output_index: u32,
        arguments: String,
    },
    /// An output item is complete (with its final content).
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { sequence_number: u64, output_index: u32, item: Map<String, Value> },
    /// The last event of a finished response: the whole response, its
    /// usage with qlaud's `cost_micros`.
    #[serde(rename = "response.completed")]
    Completed { sequence_number: u64, response: types::ResponseObject },
    /// The last event of a response cut by its output limit, with usage.
    #[serde(rename = "response.incomplete")]
    Incomplete { sequence_number: u64, response: types::ResponseObject },
    /// The last event of a response the provider failed.
    #[serde(rename = "response.failed")]
    Failed { sequence_number: u64, response: types::ResponseObject },
    /// The stream broke off.
    #[serde(rename = "error")]
    Error {
        sequence_number: u64,
        message: String,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        param: Option<String>,
    },
    /// An event type this SDK does not know yet (reasoning summaries, …).
    #[serde(other)]
    Unknown,
}

impl crate::SseEvent {
    /// This event as one of the Responses API's typed events.
    pub fn response_event(&self) -> Result<ResponseEvent, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// This event as one of Anthropic's message events.
    pub fn message_event(&self) -> Result<MessageEvent, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// This event as an OpenAI chunk; `None` for the closing `[DONE]`.
    pub fn chat_chunk(&self) -> Result<Option<ChatChunk>, serde_json::Error> {
        if self.is_done() {
            return Ok(None);
        }
        serde_json::from_str(&self.data).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SseEvent;

    fn event(data: &str) -> SseEvent {
        SseEvent { event: None, data: data.to_string() }
    }

    #[test]
    fn anthropic_events_parse_and_unknown_ones_do_not_fail() {
        let delta = event(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
        );
        assert_eq!(
            delta.message_event().unwrap(),
            MessageEvent::ContentBlockDelta {
                index: 0,
                delta: ContentDelta::TextDelta { text: "hi".into() }
            }
        );
        let end = event(
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3,"cost_micros":42}}"#,
        );
        match end.message_event().unwrap() {
            MessageEvent::MessageDelta { delta, usage: Some(u) } => {
                assert_eq!(delta.stop_reason.as_deref(), Some("end_turn"));
                assert_eq!((u.output_tokens, u.cost_micros), (3, Some(42)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            event(r#"{"type":"brand_new"}"#).message_event().unwrap(),
            MessageEvent::Unknown
        );
    }

    #[test]
    fn response_events_parse_and_unknown_ones_do_not_fail() {
        let delta = event(
            r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"hi","logprobs":[]}"#,
        );
        match delta.response_event().unwrap() {
            ResponseEvent::OutputTextDelta { delta, sequence_number, .. } => {
                assert_eq!((delta.as_str(), sequence_number), ("hi", 4));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            event(r#"{"type":"response.reasoning_summary_text.delta","sequence_number":1}"#)
                .response_event()
                .unwrap(),
            ResponseEvent::Unknown
        );
    }

    #[test]
    fn openai_chunks_parse_and_done_is_none() {
        let chunk = event(
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        );
        let chunk = chunk.chat_chunk().unwrap().unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(event("[DONE]").chat_chunk().unwrap(), None);
    }
}
