//! OpenAI's chat wire shape to and from the internal representation: a
//! request rendered for the provider (OpenAI or a service that speaks its
//! chat shape), its answers and stream chunks decoded.

use serde_json::{Map, Value, json};

use super::usage;
use crate::gateway::sse;
use crate::providers::ir::{
    Block, Completion, Event, Format, Image, Part, Request, Role, StopReason, ToolChoice,
};

pub fn stop_reason(s: &str) -> StopReason {
    match s {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::Refusal,
        other => StopReason::Other(other.to_string()),
    }
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

fn content_part(p: &Part) -> Option<Value> {
    match p {
        Part::Text(t) => Some(json!({"type": "text", "text": t})),
        Part::Image(Image::Base64 { media_type, data }) => Some(
            json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}}),
        ),
        Part::Image(Image::Url(url)) => {
            Some(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        Part::ToolUse { .. } | Part::ToolResult { .. } => None,
    }
}

fn tool_call(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function",
           "function": {"name": name, "arguments": input.to_string()}})
}

/// An internal request as a chat completions request for `upstream`. The
/// output limit goes in `max_completion_tokens` (OpenAI) or `max_tokens`
/// (services that speak the older field), see [`set_max_tokens`].
pub fn body(req: &Request, upstream: &str, legacy_limit: bool) -> Value {
    let mut messages = Vec::new();
    for s in &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        match m.role {
            Role::User => {
                // Tool results become `tool` messages, ahead of the rest of
                // the turn, as OpenAI expects them right after the call.
                for p in &m.content {
                    if let Part::ToolResult { id, content, is_error } = p {
                        let content =
                            if *is_error { format!("error: {content}") } else { content.clone() };
                        messages.push(json!({"role": "tool", "tool_call_id": id,
                                             "content": content}));
                    }
                }
                let parts: Vec<Value> = m.content.iter().filter_map(content_part).collect();
                match parts.as_slice() {
                    [] => {}
                    [one] if one["type"] == "text" => {
                        messages.push(json!({"role": "user", "content": one["text"]}));
                    }
                    _ => messages.push(json!({"role": "user", "content": parts})),
                }
            }
            Role::Assistant => {
                let text = m.text();
                let calls: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolUse { id, name, input } => Some(tool_call(id, name, input)),
                        _ => None,
                    })
                    .collect();
                let mut msg = json!({"role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { text.into() }});
                if !calls.is_empty() {
                    msg["tool_calls"] = calls.into();
                }
                messages.push(msg);
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), upstream.into());
    out.insert("messages".into(), messages.into());
    out.insert(limit_field(legacy_limit).into(), req.max_tokens.into());
    if req.stream {
        out.insert("stream".into(), true.into());
        // Usage arrives only when asked for: always ask.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        out.insert("stop".into(), req.stop.clone().into());
    }
    if let Some(user) = &req.user {
        out.insert("user".into(), user.as_str().into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.schema});
                if let Some(d) = &t.description {
                    f["description"] = d.as_str().into();
                }
                if let Some(strict) = t.strict {
                    f["strict"] = strict.into();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), tools.into());
        if let Some(p) = req.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), p.into());
        }
    }
    let choice = match &req.tool_choice {
        Some(ToolChoice::Auto) => Some(json!("auto")),
        Some(ToolChoice::Any) => Some(json!("required")),
        Some(ToolChoice::None) => Some(json!("none")),
        Some(ToolChoice::Tool(name)) => {
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        None => None,
    };
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    match &req.format {
        Some(Format::JsonSchema { name, schema, description, strict }) => {
            let mut s = json!({"name": name, "schema": schema});
            if let Some(d) = description {
                s["description"] = d.as_str().into();
            }
            if let Some(strict) = strict {
                s["strict"] = (*strict).into();
            }
            out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": s}));
        }
        Some(Format::JsonObject) => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        None => {}
    }
    Value::Object(out)
}

/// Sets the output limit of a rendered request.
pub fn set_max_tokens(body: &mut Value, max_tokens: u64, legacy_limit: bool) {
    body[limit_field(legacy_limit)] = max_tokens.into();
}

fn limit_field(legacy_limit: bool) -> &'static str {
    if legacy_limit { "max_tokens" } else { "max_completion_tokens" }
}
