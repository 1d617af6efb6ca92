//! Anthropic's shape to and from the internal representation, and
//! OpenAI-shaped requests into Anthropic's.

use bytes::Bytes;
use qlaud_api::ChatCompletionRequest;
use serde_json::{Map, Value, json};

use super::usage;
use crate::config::Prices;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};
use crate::providers::ir::{Block, Completion, Event, StopReason};

pub fn stop_reason(s: &str) -> StopReason {
    match s {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::Refusal,
        other => StopReason::Other(other.to_string()),
    }
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

fn usage_json(u: &Usage, cost: Option<i64>) -> Value {
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

/// Decodes an Anthropic message.
pub fn completion(v: &Value) -> Completion {
    let blocks = v["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| match b["type"].as_str()? {
            "text" => Some(Block::Text(b["text"].as_str().unwrap_or_default().to_string())),
            "tool_use" => Some(Block::ToolUse {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                input: b["input"].clone(),
            }),
            _ => None,
        })
        .collect();
    Completion {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        blocks,
        stop: v["stop_reason"].as_str().map(stop_reason),
        stop_sequence: v["stop_sequence"].as_str().map(str::to_string),
        usage: usage(&v["usage"]),
    }
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

/// Turns Anthropic stream events into internal events.
#[derive(Default)]
pub struct Decoder {
    usage: Usage,
}

impl Decoder {
    pub fn decode(&mut self, raw: &[u8]) -> Vec<Event> {
        let (name, data) = sse::parse(raw);
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return Vec::new();
        };
        match name.or_else(|| v["type"].as_str()) {
            Some("message_start") => {
                let id = v["message"]["id"].as_str().unwrap_or_default().to_string();
                let u = &v["message"]["usage"];
                if !u.is_object() {
                    return vec![Event::Start { id }];
                }
                self.usage = usage(u);
                // Its output count is a placeholder; real counts follow.
                self.usage.output_tokens = 0;
                vec![Event::Start { id }, Event::InputUsage(self.usage)]
            }
            Some("content_block_start") => {
                let b = &v["content_block"];
                match b["type"].as_str() {
                    Some("tool_use") => vec![Event::ToolStart {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: b["name"].as_str().unwrap_or_default().to_string(),
                    }],
                    Some("text") => match b["text"].as_str() {
                        Some(t) if !t.is_empty() => vec![Event::Text(t.to_string())],
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            Some("content_block_delta") => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        vec![Event::Text(d["text"].as_str().unwrap_or_default().to_string())]
                    }
                    Some("input_json_delta") => vec![Event::ToolArgs(
                        d["partial_json"].as_str().unwrap_or_default().to_string(),
                    )],
                    Some("thinking_delta") => {
                        vec![Event::Unseen(d["thinking"].as_str().map_or(1, |t| t.len() as u64))]
                    }
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                // Cumulative counts: the latest wins.
                let u = &v["usage"];
                super::merge_delta_usage(&mut self.usage, u);
                let mut out = Vec::new();
                if u.is_object() {
                    out.push(Event::Usage(self.usage));
                }
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    out.push(Event::Stop(stop_reason(r)));
                }
                out
            }
            Some("message_stop") => vec![Event::End],
            _ => Vec::new(),
        }
    }
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

/// Text of OpenAI message content (a string or text parts).
fn openai_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// An OpenAI content part as an Anthropic content block.
fn block_from_part(part: &Value) -> Result<Option<Value>, GatewayError> {
    Ok(match part["type"].as_str() {
        Some("text") => Some(json!({"type": "text", "text": part["text"]})),
        Some("image_url") => {
            let url = part["image_url"]["url"].as_str().or_else(|| part["image_url"].as_str());
            let url = url.ok_or_else(|| GatewayError::bad_request("image_url without a url"))?;
            Some(match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
                Some((media_type, data)) => json!({"type": "image", "source":
                    {"type": "base64", "media_type": media_type, "data": data}}),
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        _ => None,
    })
}

/// Appends a message, merging it into the previous one when the role repeats
/// (Anthropic wants user and assistant turns to alternate).
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// An OpenAI chat request as an Anthropic Messages request.
pub fn request_from_openai(
    req: &ChatCompletionRequest,
    upstream_model: &str,
    max_tokens: u64,
    stream: bool,
) -> Result<Value, GatewayError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = m["role"].as_str().unwrap_or_default();
        match role {
            "system" | "developer" => system.push(openai_text(&m["content"])),
            "user" => {
                let blocks = match &m["content"] {
                    Value::String(s) => vec![json!({"type": "text", "text": s})],
                    Value::Array(parts) => {
                        let mut blocks = Vec::new();
                        for p in parts {
                            blocks.extend(block_from_part(p)?);
                        }
                        blocks
                    }
                    _ => Vec::new(),
                };
                push(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = openai_text(&m["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call["id"],
                                       "name": call["function"]["name"], "input": input}));
                }
                push(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let block = json!({"type": "tool_result", "tool_use_id": m["tool_call_id"],
                                   "content": openai_text(&m["content"])});
                push(&mut messages, "user", vec![block]);
            }
            other => {
                return Err(GatewayError::bad_request(format!("unknown message role {other:?}")));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens.into());
    out.insert("messages".into(), messages.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n").into());
    }
    if stream {
        out.insert("stream".into(), true.into());
    }
    let x = &req.extra;
    if let Some(t) = x.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = x.get("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    match x.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = x.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = x.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({"name": f["name"], "input_schema":
                    if f["parameters"].is_object() { f["parameters"].clone() } else { json!({"type": "object"}) }});
                if let Some(d) = f["description"].as_str() {
                    tool["description"] = d.into();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    // Structured output: Anthropic's `output_config.format` takes the
    // JSON schema itself.
    if let Some(f) = x.get("response_format")
        && f["type"] == "json_schema"
        && f["json_schema"]["schema"].is_object()
    {
        let format = json!({"type": "json_schema", "schema": f["json_schema"]["schema"]});
        out.insert("output_config".into(), json!({"format": format}));
    }
    if let Some(choice) = x.get("tool_choice") {
        let c = match choice {
            Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
            Value::String(s) if s == "required" => Some(json!({"type": "any"})),
            Value::String(s) if s == "none" => Some(json!({"type": "none"})),
            Value::Object(_) => Some(json!({"type": "tool", "name": choice["function"]["name"]})),
            _ => None,
        };
        if let Some(c) = c {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}
