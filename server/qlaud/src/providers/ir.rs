//! The internal representation every cross-shape call goes through.
//!
//! A dialect (`crate::dialects`) parses its client's request into a
//! [`Request`] and renders [`Completion`]s and [`Event`]s back into its
//! client's shape; a provider renders a [`Request`] into its own wire
//! request and decodes its answers and streams into [`Completion`]s and
//! [`Event`]s. So a dialect and a provider meet only here: adding either is
//! one module. The offline `echo` model answers a [`Request`] directly.
//! Threads store their turns as [`Message`]s too.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meter::Usage;

/// A model call in no client's shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Request {
    /// System instructions, in order (one per system message or block run).
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// The output limit (the reserved one is set before sending).
    pub max_tokens: u64,
    pub stream: bool,
    /// Sampling temperature on OpenAI's 0–2 scale.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    /// The end user, for the provider's abuse monitoring.
    pub user: Option<String>,
    pub format: Option<Format>,
    pub parallel_tool_calls: Option<bool>,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

/// One piece of a message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A call the model made (assistant turns).
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// A call's result (user turns).
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
}

/// An image, inline or by URL.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Image {
    Base64 { media_type: String, data: String },
    Url(String),
}

impl Image {
    /// An image given as a URL, which may be a `data:…;base64,` URL.
    pub fn from_url(url: &str) -> Image {
        match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
            Some((media_type, data)) => {
                Image::Base64 { media_type: media_type.to_string(), data: data.to_string() }
            }
            None => Image::Url(url.to_string()),
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of its input (an object schema).
    pub schema: Value,
    pub strict: Option<bool>,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ToolChoice {
    Auto,
    /// Some tool.
    Any,
    None,
    Tool(String),
}

/// A structured-output constraint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Format {
    JsonObject,
    JsonSchema { name: String, schema: Value, description: Option<String>, strict: Option<bool> },
}

impl Message {
    /// Appends `parts` as a turn of `role`, merged into the previous turn
    /// when the role repeats (providers want turns to alternate).
    pub fn push(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
        if parts.is_empty() {
            return;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(parts),
            _ => messages.push(Message { role, content: parts }),
        }
    }

    /// The text parts, joined.
    pub fn text(&self) -> String {
        text(&self.content)
    }
}

/// The text parts of `parts`, joined with newlines.
pub fn text(parts: &[Part]) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
        .collect();
    texts.join("\n")
}

/// Why an answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    Refusal,
    Other(String),
}

/// One piece of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Text(String),
    ToolUse { id: String, name: String, input: Value },
}

/// A whole (non-streamed) answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub id: String,
    pub blocks: Vec<Block>,
    pub stop: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// One step of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The answer began.
    Start { id: String },
    /// More text.
    Text(String),
    /// A tool call began.
    ToolStart { id: String, name: String },
    /// More of the current tool call's JSON arguments.
    ToolArgs(String),
    /// The input counts, reported as the answer starts (output not yet).
    InputUsage(Usage),
    /// The provider's final counts (the latest replaces what came before).
    Usage(Usage),
    /// Output the provider bills that the client's shape has no place for
    /// (thinking, when translated): an upper bound of its tokens.
    Unseen(u64),
    /// Why the answer ended.
    Stop(StopReason),
    /// The stream ended normally.
    End,
}

impl Completion {
    /// The answer as the sequence of events a stream of it would carry.
    pub fn events(&self) -> Vec<Event> {
        let mut out = vec![Event::Start { id: self.id.clone() }];
        for block in &self.blocks {
            match block {
                Block::Text(t) => out.push(Event::Text(t.clone())),
                Block::ToolUse { id, name, input } => {
                    out.push(Event::ToolStart { id: id.clone(), name: name.clone() });
                    out.push(Event::ToolArgs(input.to_string()));
                }
            }
        }
        out.push(Event::Usage(self.usage));
        out.push(Event::Stop(self.stop.clone().unwrap_or(StopReason::EndTurn)));
        out.push(Event::End);
        out
    }
}

/// Builds a whole answer from the events of a streamed one.
#[derive(Default)]
pub struct Collector {
    id: String,
    blocks: Vec<Block>,
    /// The JSON arguments of the open tool call, as they arrive.
    args: String,
    stop: Option<StopReason>,
}

impl Collector {
    pub fn push(&mut self, event: &Event) {
        match event {
            Event::Start { id } => self.id.clone_from(id),
            Event::Text(t) => {
                self.close_tool();
                match self.blocks.last_mut() {
                    Some(Block::Text(open)) => open.push_str(t),
                    _ => self.blocks.push(Block::Text(t.clone())),
                }
            }
            Event::ToolStart { id, name } => {
                self.close_tool();
                self.blocks.push(Block::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: Value::Null,
                });
            }
            Event::ToolArgs(a) => self.args.push_str(a),
            Event::Stop(r) => self.stop = Some(r.clone()),
            // Usage is the round's tracker's to judge.
            Event::InputUsage(_) | Event::Usage(_) | Event::Unseen(_) | Event::End => {}
        }
    }

    /// Parses the open tool call's arguments (`{}` when they are not a JSON
    /// object: a model may write invalid JSON, or be cut off).
    fn close_tool(&mut self) {
        if let Some(Block::ToolUse { input, .. }) = self.blocks.last_mut()
            && input.is_null()
        {
            let args = std::mem::take(&mut self.args);
            *input = serde_json::from_str::<Value>(&args)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Default::default()));
        }
    }

    /// The answer so far, with `usage` (the settled counts) as its usage.
    pub fn finish(mut self, usage: Usage) -> Completion {
        self.close_tool();
        Completion { id: self.id, blocks: self.blocks, stop: self.stop, stop_sequence: None, usage }
    }
}
