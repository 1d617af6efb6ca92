//! Anthropic's wire shape to and from the internal representation: a
//! request rendered for the provider, its answers and stream events
//! decoded.

use serde_json::{Map, Value, json};

use super::usage;
use crate::gateway::sse;
use crate::meter::Usage;
use crate::providers::ir::{
    Block, Completion, Event, Format, Image, Part, Request, Role, StopReason, ToolChoice,
};

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

fn block(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(Image::Base64 { media_type, data }) => json!({"type": "image", "source":
            {"type": "base64", "media_type": media_type, "data": data}}),
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Part::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Part::ToolResult { id, content, is_error } => {
            let mut b = json!({"type": "tool_result", "tool_use_id": id, "content": content});
            if *is_error {
                b["is_error"] = true.into();
            }
            b
        }
    }
}

/// An internal request as an Anthropic Messages request for `upstream`.
pub fn body(req: &Request, upstream: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), upstream.into());
    out.insert("max_tokens".into(), req.max_tokens.into());
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": m.content.iter().map(block).collect::<Vec<_>>()})
        })
        .collect();
    out.insert("messages".into(), messages.into());
    if !req.system.is_empty() {
        out.insert("system".into(), req.system.join("\n").into());
    }
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    if let Some(t) = req.temperature {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), req.stop.clone().into());
    }
    if let Some(user) = &req.user {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": t.schema});
                if let Some(d) = &t.description {
                    tool["description"] = d.as_str().into();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    let mut choice = match &req.tool_choice {
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Any) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Tool(name)) => Some(json!({"type": "tool", "name": name})),
        None => None,
    };
    if req.parallel_tool_calls == Some(false) && !req.tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    // Structured output: Anthropic's `output_config.format` takes the JSON
    // schema itself (a bare JSON object has no equivalent).
    if let Some(Format::JsonSchema { schema, .. }) = &req.format
        && schema.is_object()
    {
        let format = json!({"type": "json_schema", "schema": schema});
        out.insert("output_config".into(), json!({"format": format}));
    }
    Value::Object(out)
}
