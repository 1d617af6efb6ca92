//! Anthropic's Messages API as a client dialect: a `/v1/messages` request
//! parsed into the internal representation (for a model of another
//! provider), and answers rendered back as Anthropic messages and stream
//! events, with qlaud's cost in the usage.

use bytes::Bytes;
use qlaud_api::MessagesRequest;
use serde_json::{Map, Value, json};

use crate::config::Prices;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};
use crate::providers::ir::{
    Block, Completion, Event, Format, Image, Message, Part, Request, Role, StopReason, Tool,
    ToolChoice,
};

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
}

/// Text of Anthropic content: a string, or its text blocks joined.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An Anthropic content block as a part. Thinking is readable only by the
/// provider that wrote it, so it is left out; a block qlaud cannot carry to
/// another provider is refused rather than silently dropped.
fn part(b: &Value, role: Role) -> Result<Option<Part>, GatewayError> {
    let kind = b["type"].as_str().unwrap_or_default();
    Ok(Some(match kind {
        "text" => Part::Text(b["text"].as_str().unwrap_or_default().to_string()),
        "image" => {
            let s = &b["source"];
            Part::Image(match s["type"].as_str() {
                Some("base64") => Image::Base64 {
                    media_type: s["media_type"].as_str().unwrap_or("image/png").to_string(),
                    data: s["data"].as_str().unwrap_or_default().to_string(),
                },
                Some("url") => Image::Url(s["url"].as_str().unwrap_or_default().to_string()),
                _ => return Err(bad("image blocks take a base64 or url source")),
            })
        }
        "tool_use" => Part::ToolUse {
            id: b["id"].as_str().unwrap_or_default().to_string(),
            name: b["name"].as_str().unwrap_or_default().to_string(),
            input: if b["input"].is_object() { b["input"].clone() } else { json!({}) },
        },
        "tool_result" => Part::ToolResult {
            id: b["tool_use_id"].as_str().unwrap_or_default().to_string(),
            content: text_of(&b["content"]),
            is_error: b["is_error"].as_bool().unwrap_or(false),
        },
        "thinking" | "redacted_thinking" => return Ok(None),
        // What a provider ran itself stays with that provider.
        _ if role == Role::Assistant => return Ok(None),
        other => {
            return Err(bad(format!(
                "content block type {other:?} cannot be sent to this model; send text, image, \
                 tool_use and tool_result blocks"
            )));
        }
    }))
}

/// The conversation of a Messages request (or a thread turn, which uses
/// the same blocks) as internal messages.
pub fn messages(raw: &[Value]) -> Result<Vec<Message>, GatewayError> {
    let mut out = Vec::new();
    for m in raw {
        let role = match m["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(bad(format!(
                    "message role {} is not valid: use user or assistant",
                    other.map_or("(none)".to_string(), |r| format!("{r:?}"))
                )));
            }
        };
        let parts = match &m["content"] {
            Value::String(s) => vec![Part::Text(s.clone())],
            Value::Array(blocks) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for b in blocks {
                    parts.extend(part(b, role)?);
                }
                parts
            }
            _ => return Err(bad("message content must be a string or an array of blocks")),
        };
        Message::push(&mut out, role, parts);
    }
    Ok(out)
}

/// A system prompt (a string or text blocks) as system instructions.
pub fn system(system: Option<&Value>) -> Vec<String> {
    system.map(text_of).into_iter().filter(|s| !s.is_empty()).collect()
}

/// A `/v1/messages` request as an internal request with output limit
/// `max_tokens`.
pub fn parse(req: &MessagesRequest, max_tokens: u64) -> Result<Request, GatewayError> {
    let x = &req.extra;
    let mut out = Request {
        system: system(req.system.as_ref()),
        messages: messages(&req.messages)?,
        max_tokens,
        stream: req.stream.unwrap_or(false),
        temperature: x.get("temperature").and_then(Value::as_f64),
        top_p: x.get("top_p").and_then(Value::as_f64),
        user: x.get("metadata").and_then(|m| m["user_id"].as_str()).map(str::to_string),
        ..Request::default()
    };
    if let Some(stops) = x.get("stop_sequences").and_then(Value::as_array) {
        out.stop = stops.iter().filter_map(Value::as_str).map(str::to_string).collect();
    }
    out.tools = tools(x)?;
    if let Some(choice) = x.get("tool_choice") {
        out.tool_choice = match choice["type"].as_str() {
            Some("auto") => Some(ToolChoice::Auto),
            Some("any") => Some(ToolChoice::Any),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => choice["name"].as_str().map(|n| ToolChoice::Tool(n.to_string())),
            _ => None,
        };
        if choice["disable_parallel_tool_use"].as_bool() == Some(true) {
            out.parallel_tool_calls = Some(false);
        }
    }
    let format = x.get("output_config").map(|c| &c["format"]).filter(|f| f.is_object());
    if let Some(f) = format
        && f["type"] == "json_schema"
    {
        out.format = Some(Format::JsonSchema {
            name: "response".into(),
            schema: f["schema"].clone(),
            description: None,
            strict: Some(true),
        });
    }
    Ok(out)
}

/// Anthropic tool definitions as internal tools. Server tools (web search,
/// code execution, …) run at the provider that hosts them and are refused
/// for any other.
fn tools(x: &Map<String, Value>) -> Result<Vec<Tool>, GatewayError> {
    let Some(tools) = x.get("tools").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .map(|t| {
            if t.get("type").is_some_and(|k| k != "custom") {
                return Err(bad(format!(
                    "tool type {} runs only on Anthropic's own models",
                    t["type"]
                )));
            }
            Ok(Tool {
                name: t["name"].as_str().unwrap_or_default().to_string(),
                description: t["description"].as_str().map(str::to_string),
                schema: if t["input_schema"].is_object() {
                    t["input_schema"].clone()
                } else {
                    json!({"type": "object"})
                },
                strict: None,
            })
        })
        .collect()
}

pub fn stop_str(r: &StopReason) -> &str {
    match r {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::Refusal => "refusal",
        StopReason::Other(s) => s,
    }
}

pub fn usage_json(u: &Usage, cost: Option<i64>) -> Value {
    let mut v = json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    });
    if let Some(c) = cost {
        v["cost_micros"] = c.into();
    }
    v
}

/// Encodes an answer as an Anthropic message.
pub fn message(c: &Completion, model: &str, cost: i64) -> Value {
    let content: Vec<Value> = c
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": c.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": c.stop.as_ref().map(stop_str),
        "stop_sequence": c.stop_sequence,
        "usage": usage_json(&c.usage, Some(cost)),
    })
}

/// Writes internal events as Anthropic stream events, adding qlaud's cost to
/// the final usage.
pub struct Encoder {
    model: String,
    prices: Prices,
    /// The index and kind (`true` for text) of the open content block.
    open: Option<(u32, bool)>,
    next_index: u32,
    usage: Usage,
    stop: Option<StopReason>,
    /// A local count of the prompt for `message_start`, where a provider
    /// that reports usage only at the end has no figure yet.
    start_input: Option<u64>,
}

impl Encoder {
    pub fn new(model: &str, prices: Prices) -> Encoder {
        Encoder {
            model: model.to_string(),
            prices,
            open: None,
            next_index: 0,
            usage: Usage::default(),
            stop: None,
            start_input: None,
        }
    }

    /// Reports `tokens` as the input in `message_start` when the provider
    /// has reported none by then. Clients that read input tokens only there
    /// (LangChain JS) would otherwise show 0; the final `message_delta`
    /// still carries the provider's own counts.
    pub fn start_input(&mut self, tokens: u64) {
        self.start_input = Some(tokens);
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            let v = json!({"type": "content_block_stop", "index": index});
            out.push(sse::event(Some("content_block_stop"), &v.to_string()));
        }
    }

    fn open_block(&mut self, block: Value, text: bool, out: &mut Vec<Bytes>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, text));
        let v = json!({"type": "content_block_start", "index": index, "content_block": block});
        out.push(sse::event(Some("content_block_start"), &v.to_string()));
        index
    }

    pub fn encode(&mut self, event: Event) -> Vec<Bytes> {
        let mut out = Vec::new();
        match event {
            Event::Start { id } => {
                let mut usage = self.usage;
                let reported =
                    usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens;
                if reported == 0 {
                    usage.input_tokens = self.start_input.unwrap_or(0);
                }
                let v = json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "content": [],
                    "model": self.model, "stop_reason": null, "stop_sequence": null,
                    "usage": usage_json(&usage, None)}});
                out.push(sse::event(Some("message_start"), &v.to_string()));
            }
            Event::Text(t) => {
                let index = match self.open {
                    Some((i, true)) => i,
                    _ => self.open_block(json!({"type": "text", "text": ""}), true, &mut out),
                };
                let v = json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": t}});
                out.push(sse::event(Some("content_block_delta"), &v.to_string()));
            }
            Event::ToolStart { id, name } => {
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                self.open_block(block, false, &mut out);
            }
            Event::ToolArgs(partial) => {
                if let Some((index, false)) = self.open {
                    let v = json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": partial}});
                    out.push(sse::event(Some("content_block_delta"), &v.to_string()));
                }
            }
            Event::InputUsage(u) | Event::Usage(u) => self.usage = u,
            Event::Unseen(_) => {}
            Event::Stop(r) => {
                self.close(&mut out);
                self.stop = Some(r);
            }
            Event::End => {
                self.close(&mut out);
                let cost = cost_micros(&self.prices, &self.usage);
                let v = json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop.as_ref().map(stop_str), "stop_sequence": null},
                    "usage": usage_json(&self.usage, Some(cost))});
                out.push(sse::event(Some("message_delta"), &v.to_string()));
                out.push(sse::event(Some("message_stop"), r#"{"type":"message_stop"}"#));
            }
        }
        out
    }
}
