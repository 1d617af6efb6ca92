//! OpenAI's Responses wire shape, spoken to a provider: an internal request
//! rendered as a Responses request, and a response (whole or streamed)
//! decoded. Perplexity's Agent API speaks this shape; so does OpenAI.
//! (The other direction, a Responses client's request read into the
//! internal representation, is the dialect in `crate::dialects::responses`.)

use serde_json::{Map, Value, json};

use super::responses_usage;
use crate::gateway::sse;
use crate::providers::ir::{
    Block, Completion, Event, Format, Image, Part, Request, Role, StopReason, ToolChoice,
};

fn image_url(image: &Image) -> String {
    match image {
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        Image::Url(url) => url.clone(),
    }
}

/// The conversation as Responses input items: each turn's text and images
/// as one message item, each tool call and result as an item of its own
/// (results ahead of the rest of their turn, right after their calls).
fn input(req: &Request) -> Vec<Value> {
    let mut items = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::User => {
                let mut parts = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult { id, content, is_error } => {
                            let output = if *is_error {
                                format!("error: {content}")
                            } else {
                                content.clone()
                            };
                            items.push(json!({"type": "function_call_output", "call_id": id,
                                              "output": output}));
                        }
                        Part::Text(t) => parts.push(json!({"type": "input_text", "text": t})),
                        Part::Image(i) => parts
                            .push(json!({"type": "input_image", "image_url": image_url(i),
                                   "detail": "auto"})),
                        Part::ToolUse { .. } => {}
                    }
                }
                if !parts.is_empty() {
                    items.push(json!({"type": "message", "role": "user", "content": parts}));
                }
            }
            Role::Assistant => {
                let text = m.text();
                if !text.is_empty() {
                    items.push(json!({"type": "message", "role": "assistant", "content": text}));
                }
                for p in &m.content {
                    if let Part::ToolUse { id, name, input } = p {
                        items.push(json!({"type": "function_call", "call_id": id, "name": name,
                                          "arguments": input.to_string()}));
                    }
                }
            }
        }
    }
    items
}

/// An internal request as a Responses request for `upstream`. Nothing is
/// stored upstream (`store: false`): state is qlaud's. Stop sequences have
/// no field in this shape and are not sent.
pub fn body(req: &Request, upstream: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), upstream.into());
    out.insert("input".into(), input(req).into());
    if !req.system.is_empty() {
        out.insert("instructions".into(), req.system.join("\n\n").into());
    }
    out.insert("max_output_tokens".into(), req.max_tokens.into());
    out.insert("store".into(), false.into());
    if req.stream {
        out.insert("stream".into(), true.into());
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), p.into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"type": "function", "name": t.name, "parameters": t.schema});
                if let Some(d) = &t.description {
                    f["description"] = d.as_str().into();
                }
                if let Some(strict) = t.strict {
                    f["strict"] = strict.into();
                }
                f
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
        Some(ToolChoice::Tool(name)) => Some(json!({"type": "function", "name": name})),
        None => None,
    };
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    match &req.format {
        Some(Format::JsonSchema { name, schema, description, strict }) => {
            let mut f = json!({"type": "json_schema", "name": name, "schema": schema});
            if let Some(d) = description {
                f["description"] = d.as_str().into();
            }
            if let Some(strict) = strict {
                f["strict"] = (*strict).into();
            }
            out.insert("text".into(), json!({"format": f}));
        }
        Some(Format::JsonObject) => {
            out.insert("text".into(), json!({"format": {"type": "json_object"}}));
        }
        None => {}
    }
    Value::Object(out)
}

/// Sets the output limit of a rendered request.
pub fn set_max_tokens(body: &mut Value, max_tokens: u64) {
    body["max_output_tokens"] = max_tokens.into();
}

/// Why a response ended: from its status and output.
fn stop_reason(response: &Value, called_tools: bool) -> StopReason {
    match response["status"].as_str() {
        Some("incomplete") => match response["incomplete_details"]["reason"].as_str() {
            Some("max_output_tokens") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::Refusal,
            Some(other) => StopReason::Other(other.to_string()),
            None => StopReason::Other("incomplete".into()),
        },
        _ if called_tools => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

/// Decodes a whole response: its message text and function calls, in
/// order. Built-in tool items (a web search the provider ran) are the
/// provider's own work and have no place in the internal answer.
pub fn completion(v: &Value) -> Completion {
    let mut blocks = Vec::new();
    for item in v["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                        match blocks.last_mut() {
                            Some(Block::Text(open)) => open.push_str(t),
                            _ => blocks.push(Block::Text(t.to_string())),
                        }
                    }
                }
            }
            Some("function_call") => {
                let args = item["arguments"].as_str().unwrap_or("{}");
                blocks.push(Block::ToolUse {
                    id: item["call_id"].as_str().unwrap_or_default().to_string(),
                    name: item["name"].as_str().unwrap_or_default().to_string(),
                    input: serde_json::from_str(args).unwrap_or_else(|_| json!({})),
                });
            }
            _ => {}
        }
    }
    let called = blocks.iter().any(|b| matches!(b, Block::ToolUse { .. }));
    Completion {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        stop: Some(stop_reason(v, called)),
        blocks,
        stop_sequence: None,
        usage: responses_usage(&v["usage"]),
    }
}

/// Turns Responses stream events into internal events.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    called_tools: bool,
}

impl Decoder {
    pub fn decode(&mut self, raw: &[u8]) -> Vec<Event> {
        let (_, data) = sse::parse(raw);
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            let id = v["response"]["id"].as_str().or(v["item_id"].as_str()).unwrap_or_default();
            out.push(Event::Start { id: id.to_string() });
        }
        match v["type"].as_str().unwrap_or_default() {
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(d) = v["delta"].as_str().filter(|d| !d.is_empty()) {
                    out.push(Event::Text(d.to_string()));
                }
            }
            "response.output_item.added" if v["item"]["type"] == "function_call" => {
                self.called_tools = true;
                let item = &v["item"];
                out.push(Event::ToolStart {
                    id: item["call_id"].as_str().unwrap_or_default().to_string(),
                    name: item["name"].as_str().unwrap_or_default().to_string(),
                });
            }
            "response.function_call_arguments.delta" => {
                if let Some(d) = v["delta"].as_str().filter(|d| !d.is_empty()) {
                    out.push(Event::ToolArgs(d.to_string()));
                }
            }
            // Reasoning is billed output the client's shape does not show.
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                if let Some(d) = v["delta"].as_str() {
                    out.push(Event::Unseen((d.len() as u64).max(1)));
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = &v["response"];
                if response["usage"].is_object() {
                    out.push(Event::Usage(responses_usage(&response["usage"])));
                }
                out.push(Event::Stop(stop_reason(response, self.called_tools)));
                out.push(Event::End);
            }
            // A failed response ends without an answer; what it billed, it
            // reports like a finished one.
            "response.failed" if v["response"]["usage"].is_object() => {
                out.push(Event::Usage(responses_usage(&v["response"]["usage"])));
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::Usage;
    use crate::providers::ir::{Message, Tool};

    #[test]
    fn renders_a_conversation_with_a_tool_round() {
        let req = Request {
            system: vec!["be brief".into()],
            messages: vec![
                Message { role: Role::User, content: vec![Part::Text("weather?".into())] },
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolUse {
                        id: "c1".into(),
                        name: "weather".into(),
                        input: json!({"city": "Paris"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        id: "c1".into(),
                        content: "sunny".into(),
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "weather".into(),
                description: None,
                schema: json!({"type": "object"}),
                strict: None,
            }],
            tool_choice: Some(ToolChoice::Tool("weather".into())),
            max_tokens: 50,
            ..Request::default()
        };
        let b = body(&req, "perplexity/sonar");
        assert_eq!(b["instructions"], "be brief");
        assert_eq!(b["store"], false);
        assert_eq!(b["max_output_tokens"], 50);
        assert_eq!(b["input"][0]["content"][0], json!({"type": "input_text", "text": "weather?"}));
        assert_eq!(b["input"][1]["type"], "function_call");
        assert_eq!(b["input"][1]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(
            b["input"][2],
            json!({"type": "function_call_output", "call_id": "c1", "output": "sunny"})
        );
        assert_eq!(b["tools"][0]["name"], "weather");
        assert_eq!(b["tool_choice"], json!({"type": "function", "name": "weather"}));
    }

    #[test]
    fn decodes_a_whole_response_and_its_stream_alike() {
        let whole = json!({"id": "resp_1", "status": "completed", "output": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "hi there", "annotations": []}]},
            {"type": "function_call", "call_id": "c9", "name": "f", "arguments": "{\"a\":1}"}],
            "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}});
        let c = completion(&whole);
        assert_eq!(c.id, "resp_1");
        assert_eq!(c.stop, Some(StopReason::ToolUse));
        assert_eq!(c.usage, Usage { input_tokens: 7, output_tokens: 3, ..Usage::default() });
        assert_eq!(c.blocks[0], Block::Text("hi there".into()));

        let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
        let mut d = Decoder::default();
        let mut events = Vec::new();
        for raw in [
            ev(json!({"type": "response.created", "response": {"id": "resp_1"}})),
            ev(json!({"type": "response.output_text.delta", "delta": "hi "})),
            ev(json!({"type": "response.output_text.delta", "delta": "there"})),
            ev(json!({"type": "response.output_item.added",
                      "item": {"type": "function_call", "call_id": "c9", "name": "f"}})),
            ev(json!({"type": "response.function_call_arguments.delta", "delta": "{\"a\":1}"})),
            ev(json!({"type": "response.completed", "response": whole.clone()})),
        ] {
            events.extend(d.decode(raw.as_bytes()));
        }
        let mut collector = crate::providers::ir::Collector::default();
        for e in &events {
            collector.push(e);
        }
        let streamed = collector.finish(c.usage);
        assert_eq!(streamed, c);
        assert_eq!(events.last(), Some(&Event::End));
    }

    #[test]
    fn an_incomplete_response_stopped_at_its_limit() {
        let v = json!({"status": "incomplete",
                       "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        assert_eq!(completion(&v).stop, Some(StopReason::MaxTokens));
    }
}
