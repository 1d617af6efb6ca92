//! Typed stream events: Anthropic's message events and OpenAI's chat
//! completion chunks, read from an [`SseEvent`](crate::SseEvent) with
//! [`SseEvent::message_event`](crate::SseEvent::message_event) and
//! [`SseEvent::chat_chunk`](crate::SseEvent::chat_chunk).
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

impl crate::SseEvent {
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
    fn openai_chunks_parse_and_done_is_none() {
        let chunk = event(
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        );
        let chunk = chunk.chat_chunk().unwrap().unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(event("[DONE]").chat_chunk().unwrap(), None);
    }
}
