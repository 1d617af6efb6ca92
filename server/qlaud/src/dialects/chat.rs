//! OpenAI's Chat Completions API as a client dialect: a
//! `/v1/chat/completions` request parsed into the internal representation
//! (for a model of another provider), and answers rendered back as chat
//! completions and chunks, with qlaud's cost in the usage.

use bytes::Bytes;
use qlaud_api::ChatCompletionRequest;
use serde_json::{Value, json};

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

/// Text of chat message content: a string, or its text parts joined.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// A user content part as an internal part.
fn part(p: &Value) -> Result<Part, GatewayError> {
    match p["type"].as_str() {
        Some("text") => Ok(Part::Text(p["text"].as_str().unwrap_or_default().to_string())),
        Some("image_url") => {
            let url = p["image_url"]["url"].as_str().or_else(|| p["image_url"].as_str());
            let url = url.ok_or_else(|| bad("image_url without a url"))?;
            Ok(Part::Image(Image::from_url(url)))
        }
        other => Err(bad(format!(
            "content part {} cannot be sent to this model; send text and image_url parts",
            other.map_or("without a type".to_string(), |t| format!("{t:?}"))
        ))),
    }
}

/// Tool call arguments as JSON (a model may have written invalid JSON).
pub fn arguments(args: &Value) -> Value {
    match args {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        Value::Object(_) => args.clone(),
        _ => json!({}),
    }
}

/// A `/v1/chat/completions` request as an internal request with output
/// limit `max_tokens`.
pub fn parse(req: &ChatCompletionRequest, max_tokens: u64) -> Result<Request, GatewayError> {
    let mut out = Request { max_tokens, stream: req.stream.unwrap_or(false), ..Request::default() };
    for m in &req.messages {
        let role = m["role"].as_str().unwrap_or_default();
        match role {
            "system" | "developer" => out.system.push(text_of(&m["content"])),
            "user" => {
                let parts = match &m["content"] {
                    Value::String(s) => vec![Part::Text(s.clone())],
                    Value::Array(parts) => parts.iter().map(part).collect::<Result<_, _>>()?,
                    _ => return Err(bad("user message content must be a string or parts")),
                };
                Message::push(&mut out.messages, Role::User, parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                let text = text_of(&m["content"]);
                if !text.is_empty() {
                    parts.push(Part::Text(text));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    parts.push(Part::ToolUse {
                        id: call["id"].as_str().unwrap_or_default().to_string(),
                        name: call["function"]["name"].as_str().unwrap_or_default().to_string(),
                        input: arguments(&call["function"]["arguments"]),
                    });
                }
                Message::push(&mut out.messages, Role::Assistant, parts);
            }
            "tool" => {
                let result = Part::ToolResult {
                    id: m["tool_call_id"].as_str().unwrap_or_default().to_string(),
                    content: text_of(&m["content"]),
                    is_error: false,
                };
                Message::push(&mut out.messages, Role::User, vec![result]);
            }
            other => return Err(bad(format!("unknown message role {other:?}"))),
        }
    }
    let x = &req.extra;
    out.temperature = x.get("temperature").and_then(Value::as_f64);
    out.top_p = x.get("top_p").and_then(Value::as_f64);
    out.stop = match x.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    out.user = x.get("user").and_then(Value::as_str).map(str::to_string);
    out.parallel_tool_calls = x.get("parallel_tool_calls").and_then(Value::as_bool);
    for t in x.get("tools").and_then(Value::as_array).into_iter().flatten() {
        if t["type"] != "function" {
            return Err(bad(format!("tool type {} is not supported for this model", t["type"])));
        }
        let f = &t["function"];
        out.tools.push(Tool {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            description: f["description"].as_str().map(str::to_string),
            schema: if f["parameters"].is_object() {
                f["parameters"].clone()
            } else {
                json!({"type": "object"})
            },
            strict: f["strict"].as_bool(),
        });
    }
    out.tool_choice = match x.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Any),
        Some(Value::String(s)) if s == "none" => Some(ToolChoice::None),
        Some(c @ Value::Object(_)) => {
            c["function"]["name"].as_str().map(|n| ToolChoice::Tool(n.to_string()))
        }
        _ => None,
    };
    out.format = match x.get("response_format") {
        Some(f) if f["type"] == "json_schema" && f["json_schema"]["schema"].is_object() => {
            let s = &f["json_schema"];
            Some(Format::JsonSchema {
                name: s["name"].as_str().unwrap_or("response").to_string(),
                schema: s["schema"].clone(),
                description: s["description"].as_str().map(str::to_string),
                strict: s["strict"].as_bool(),
            })
        }
        Some(f) if f["type"] == "json_object" => Some(Format::JsonObject),
        _ => None,
    };
    Ok(out)
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

pub fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
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
