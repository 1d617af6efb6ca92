//! OpenAI's shape to and from the internal representation, and
//! Anthropic-shaped requests into OpenAI's.

use bytes::Bytes;
use qlaud_api::MessagesRequest;
use serde_json::{Map, Value, json};

use super::usage;
use crate::config::Prices;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};
use crate::providers::ir::{Block, Completion, Event, StopReason};

pub fn stop_reason(s: &str) -> StopReason {
    match s {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        other => StopReason::Other(other.to_string()),
    }
}

pub fn finish_str(r: &StopReason) -> &str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::Refusal => "content_filter",
        StopReason::Other(s) => s,
    }
}

pub fn usage_json(u: &Usage, cost: i64) -> Value {
    let prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "cost_micros": cost,
    })
}

/// Decodes a chat completion (its first choice).
pub fn completion(v: &Value) -> Completion {
    let choice = &v["choices"][0];
    let msg = &choice["message"];
    let mut blocks = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        blocks.push(Block::Text(t.to_string()));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        blocks.push(Block::ToolUse {
            id: call["id"].as_str().unwrap_or_default().to_string(),
            name: call["function"]["name"].as_str().unwrap_or_default().to_string(),
            input: serde_json::from_str(args).unwrap_or_else(|_| json!({})),
        });
    }
    Completion {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        blocks,
        stop: choice["finish_reason"].as_str().map(stop_reason),
        stop_sequence: None,
        usage: usage(&v["usage"]),
    }
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// Encodes an answer as a chat completion.
pub fn chat_completion(c: &Completion, model: &str, created: i64, cost: i64) -> Value {
    let text: String = c
        .blocks
        .iter()
        .filter_map(|b| if let Block::Text(t) = b { Some(t.as_str()) } else { None })
        .collect();
    let calls: Vec<Value> = c
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, name, input } => Some(tool_call(id, name, &input.to_string())),
            Block::Text(_) => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": null, "refusal": null});
    if !text.is_empty() || calls.is_empty() {
        message["content"] = text.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    json!({
        "id": c.id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": c.stop.as_ref().map(finish_str).unwrap_or("stop")}],
        "usage": usage_json(&c.usage, cost),
    })
}

/// Turns OpenAI stream chunks into internal events.
#[derive(Default)]
pub struct Decoder {
    started: bool,
}

impl Decoder {
    pub fn decode(&mut self, raw: &[u8]) -> Vec<Event> {
        let (_, data) = sse::parse(raw);
        if data.trim() == "[DONE]" {
            return vec![Event::End];
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(Event::Start { id: v["id"].as_str().unwrap_or_default().to_string() });
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(Event::Text(t.to_string()));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            if let Some(id) = call["id"].as_str() {
                let name = call["function"]["name"].as_str().unwrap_or_default();
                out.push(Event::ToolStart { id: id.to_string(), name: name.to_string() });
            }
            if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                out.push(Event::ToolArgs(args.to_string()));
            }
        }
        if let Some(r) = choice["finish_reason"].as_str() {
            out.push(Event::Stop(stop_reason(r)));
        }
        if v["usage"].is_object() {
            out.push(Event::Usage(usage(&v["usage"])));
        }
        out
    }
}

/// Writes internal events as OpenAI chunks, ending with the usage chunk
/// (when the client asked for it) and `data: [DONE]`.
pub struct Encoder {
    id: String,
    model: String,
    created: i64,
    prices: Prices,
    wants_usage: bool,
    tool_index: i64,
    usage: Usage,
}

impl Encoder {
    pub fn new(model: &str, prices: Prices, wants_usage: bool) -> Encoder {
        Encoder {
            id: String::new(),
            model: model.to_string(),
            created: chrono::Utc::now().timestamp(),
            prices,
            wants_usage,
            tool_index: -1,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        sse::event(None, &v.to_string())
    }

    pub fn encode(&mut self, event: Event) -> Vec<Bytes> {
        match event {
            Event::Start { id } => {
                self.id = id;
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            Event::Text(t) => vec![self.chunk(json!({"content": t}), None)],
            Event::ToolStart { id, name } => {
                self.tool_index += 1;
                let mut call = tool_call(&id, &name, "");
                call["index"] = self.tool_index.into();
                vec![self.chunk(json!({"tool_calls": [call]}), None)]
            }
            Event::ToolArgs(args) => {
                let call =
                    json!({"index": self.tool_index.max(0), "function": {"arguments": args}});
                vec![self.chunk(json!({"tool_calls": [call]}), None)]
            }
            Event::InputUsage(u) | Event::Usage(u) => {
                self.usage = u;
                Vec::new()
            }
            Event::Unseen(_) => Vec::new(),
            Event::Stop(r) => vec![self.chunk(json!({}), Some(finish_str(&r)))],
            Event::End => {
                let mut out = Vec::new();
                if self.wants_usage {
                    let cost = cost_micros(&self.prices, &self.usage);
                    let v = json!({"id": self.id, "object": "chat.completion.chunk",
                                   "created": self.created, "model": self.model, "choices": [],
                                   "usage": usage_json(&self.usage, cost)});
                    out.push(sse::event(None, &v.to_string()));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                out
            }
        }
    }
}

/// Text of Anthropic content (a string or text blocks).
fn anthropic_text(content: &Value) -> String {
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

/// An Anthropic content block as an OpenAI user content part.
fn part_from_block(b: &Value) -> Option<Value> {
    match b["type"].as_str()? {
        "text" => Some(json!({"type": "text", "text": b["text"]})),
        "image" => {
            let s = &b["source"];
            let url = match s["type"].as_str()? {
                "base64" => format!(
                    "data:{};base64,{}",
                    s["media_type"].as_str().unwrap_or("image/png"),
                    s["data"].as_str().unwrap_or_default()
                ),
                "url" => s["url"].as_str()?.to_string(),
                _ => return None,
            };
            Some(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        _ => None,
    }
}

/// An Anthropic Messages request as an OpenAI chat request.
pub fn request_from_anthropic(
    req: &MessagesRequest,
    upstream_model: &str,
    max_tokens: u64,
    stream: bool,
) -> Result<Value, GatewayError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": anthropic_text(system)}));
    }
    for m in &req.messages {
        let role = m["role"].as_str().unwrap_or_default();
        let content = &m["content"];
        match (role, content) {
            ("user" | "assistant", Value::String(s)) => {
                messages.push(json!({"role": role, "content": s}));
            }
            ("user", Value::Array(blocks)) => {
                // Tool results become `tool` messages, ahead of the rest of
                // the turn, as OpenAI expects them right after the call.
                for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                    messages.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"],
                                         "content": anthropic_text(&b["content"])}));
                }
                let parts: Vec<Value> = blocks.iter().filter_map(part_from_block).collect();
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            ("assistant", Value::Array(blocks)) => {
                let text = anthropic_text(content);
                let calls: Vec<Value> = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| {
                        tool_call(
                            b["id"].as_str().unwrap_or_default(),
                            b["name"].as_str().unwrap_or_default(),
                            &b["input"].to_string(),
                        )
                    })
                    .collect();
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }});
                if !calls.is_empty() {
                    msg["tool_calls"] = calls.into();
                }
                messages.push(msg);
            }
            _ => {
                return Err(GatewayError::bad_request(format!(
                    "messages: unsupported role {role:?} or content"
                )));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("messages".into(), messages.into());
    out.insert("max_completion_tokens".into(), max_tokens.into());
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let x = &req.extra;
    for field in ["temperature", "top_p"] {
        if let Some(v) = x.get(field) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(stops) = x.get("stop_sequences") {
        out.insert("stop".into(), stops.clone());
    }
    if let Some(user) = x.get("metadata").and_then(|m| m["user_id"].as_str()) {
        out.insert("user".into(), user.into());
    }
    if let Some(tools) = x.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t["name"], "parameters": t["input_schema"]});
                if let Some(d) = t["description"].as_str() {
                    f["description"] = d.into();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    if let Some(choice) = x.get("tool_choice") {
        let c = match choice["type"].as_str() {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => Some(json!({"type": "function", "function": {"name": choice["name"]}})),
            _ => None,
        };
        if let Some(c) = c {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}
