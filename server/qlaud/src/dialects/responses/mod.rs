//! OpenAI's Responses API as a client dialect: what qlaud refuses to
//! forward (`check`), a request parsed into the internal representation
//! for a model of a chat provider (`parse`), answers rendered back in the
//! Responses shape (`render`), and items converted to and from the form
//! threads store (`items`).

pub mod items;
pub mod render;

use qlaud_api::ResponsesRequest;
use serde_json::{Value, json};

use crate::gateway::error::GatewayError;
use crate::providers::ir::{Format, Image, Message, Part, Request, Role, Tool, ToolChoice};

/// Tool types that are plain definitions the model calls back through the
/// client. Every other type is a hosted tool the provider runs and bills
/// per call, at fees qlaud does not price.
const CLIENT_TOOLS: [&str; 2] = ["function", "custom"];

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
}

/// Refuses what qlaud cannot serve or bound, before any provider is
/// called: `conversation` together with `previous_response_id` (as OpenAI
/// does), item references, stored prompts, background runs and hosted
/// tools.
///
/// Hosted tools are refused unless the provider's own are `priced` (the
/// provider module then checks each one it bills).
pub fn check(req: &ResponsesRequest, priced: bool) -> Result<(), GatewayError> {
    if req.previous_response_id.is_some() && req.conversation.as_ref().is_some_and(|c| !c.is_null())
    {
        return Err(bad(
            "Mutually exclusive parameters: send only one of previous_response_id or \
             conversation",
        )
        .with_code("mutually_exclusive_parameters"));
    }
    if req.extra.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "background responses are not supported yet: qlaud answers while the client waits",
        ));
    }
    if req.extra.get("prompt").is_some_and(|p| !p.is_null()) {
        return Err(bad(
            "prompt (a reusable prompt stored at the provider) is not supported: send its text \
             as instructions and input",
        ));
    }
    match &req.input {
        None | Some(Value::Null) => return Err(bad("input is required")),
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            if items.iter().any(|i| i["type"] == "item_reference") {
                return Err(bad(
                    "item_reference inputs are not supported: send the item itself, or chain \
                     with previous_response_id or conversation",
                ));
            }
        }
        Some(_) => return Err(bad("input must be a string or an array of input items")),
    }
    if let Some(i) = &req.instructions
        && !(i.is_string() || i.is_null())
    {
        return Err(bad("instructions must be a string"));
    }
    for tool in req.tools.iter().flatten().filter(|_| !priced) {
        let kind = tool["type"].as_str().unwrap_or_default();
        if !CLIENT_TOOLS.contains(&kind) {
            return Err(bad(format!(
                "tool type {kind:?} is not supported: qlaud serves function tools; hosted tools \
                 are billed by the provider per call at fees qlaud does not price"
            )));
        }
    }
    Ok(())
}

/// Text of Responses content: a string, or the text of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p["refusal"].as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A user-side content part as an internal part.
fn part(p: &Value, model: &str) -> Result<Part, GatewayError> {
    match p["type"].as_str() {
        Some("input_text" | "output_text" | "text") => {
            Ok(Part::Text(p["text"].as_str().unwrap_or_default().to_string()))
        }
        Some("input_image") => {
            let url = p["image_url"].as_str().ok_or_else(|| {
                bad(format!("model {model:?} takes input_image by image_url (a URL or data URL)"))
            })?;
            Ok(Part::Image(Image::from_url(url)))
        }
        other => Err(bad(format!(
            "content part {} is not supported for model {model:?}",
            other.unwrap_or("without a type")
        ))),
    }
}

fn push_item(out: &mut Request, item: &Value, model: &str) -> Result<(), GatewayError> {
    // Easy input messages (`{role, content}`) carry no type.
    let kind = item["type"].as_str().unwrap_or("message");
    match kind {
        "message" => {
            let role = item["role"].as_str().unwrap_or_default();
            let content = &item["content"];
            match role {
                "system" | "developer" => out.system.push(text_of(content)),
                "assistant" => {
                    let text = text_of(content);
                    Message::push(&mut out.messages, Role::Assistant, vec![Part::Text(text)]);
                }
                "user" => {
                    let parts = match content {
                        Value::String(s) => vec![Part::Text(s.clone())],
                        Value::Array(parts) => {
                            parts.iter().map(|p| part(p, model)).collect::<Result<_, _>>()?
                        }
                        _ => return Err(bad("input message content must be a string or parts")),
                    };
                    Message::push(&mut out.messages, Role::User, parts);
                }
                _ => return Err(bad(format!("input message with role {role:?} is not valid"))),
            }
        }
        "function_call" => {
            let call = Part::ToolUse {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().unwrap_or_default().to_string(),
                input: crate::dialects::chat::arguments(&item["arguments"]),
            };
            Message::push(&mut out.messages, Role::Assistant, vec![call]);
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(s) => s.clone(),
                other => text_of(other),
            };
            let result = Part::ToolResult {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                content: output,
                is_error: false,
            };
            Message::push(&mut out.messages, Role::User, vec![result]);
        }
        // Reasoning is readable only by the provider that wrote it.
        "reasoning" => {}
        other => {
            return Err(bad(format!(
                "input item type {other:?} is not supported for model {model:?}"
            )));
        }
    }
    Ok(())
}

/// A checked Responses request as an internal request with output limit
/// `max_tokens`. `model` names the model in errors.
pub fn parse(
    req: &ResponsesRequest,
    model: &str,
    max_tokens: u64,
) -> Result<Request, GatewayError> {
    let mut out = Request { max_tokens, stream: req.stream.unwrap_or(false), ..Request::default() };
    if let Some(i) = req.instructions.as_ref().and_then(Value::as_str) {
        out.system.push(i.to_string());
    }
    match &req.input {
        Some(Value::String(s)) => {
            Message::push(&mut out.messages, Role::User, vec![Part::Text(s.clone())]);
        }
        Some(Value::Array(items)) => {
            for item in items {
                push_item(&mut out, item, model)?;
            }
        }
        _ => {}
    }
    let x = &req.extra;
    out.temperature = x.get("temperature").and_then(Value::as_f64);
    out.top_p = x.get("top_p").and_then(Value::as_f64);
    out.parallel_tool_calls = x.get("parallel_tool_calls").and_then(Value::as_bool);
    out.user = x
        .get("user")
        .or_else(|| x.get("safety_identifier"))
        .and_then(Value::as_str)
        .map(str::to_string);
    for t in req.tools.iter().flatten() {
        out.tools.push(Tool {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            description: t["description"].as_str().map(str::to_string),
            schema: if t["parameters"].is_object() {
                t["parameters"].clone()
            } else {
                json!({"type": "object"})
            },
            strict: t["strict"].as_bool(),
        });
    }
    out.tool_choice = match &req.tool_choice {
        Some(Value::String(s)) if s == "auto" => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Any),
        Some(Value::String(s)) if s == "none" => Some(ToolChoice::None),
        Some(c @ Value::Object(_)) if c["type"] == "function" => {
            c["name"].as_str().map(|n| ToolChoice::Tool(n.to_string()))
        }
        _ => None,
    };
    let format = req.text.as_ref().map(|t| &t["format"]).filter(|f| f.is_object());
    out.format = match format.and_then(|f| f["type"].as_str()) {
        Some("json_schema") => {
            let f = format.unwrap_or(&Value::Null);
            Some(Format::JsonSchema {
                name: f["name"].as_str().unwrap_or("response").to_string(),
                schema: f["schema"].clone(),
                description: f["description"].as_str().map(str::to_string),
                strict: f["strict"].as_bool(),
            })
        }
        Some("json_object") => Some(Format::JsonObject),
        _ => None,
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_tool_round_becomes_chat_messages() {
        let r = req(json!({"model": "m", "instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ], "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
           "tool_choice": {"type": "function", "name": "w"},
           "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}));
        check(&r, false).unwrap();
        let c = parse(&r, "m", 100).unwrap();
        assert_eq!(c.system, ["be brief"]);
        assert_eq!(c.messages[0].content, [Part::Text("weather?".into())]);
        assert_eq!(
            c.messages[1].content,
            [Part::ToolUse { id: "c1".into(), name: "w".into(), input: json!({"a": 1}) }]
        );
        assert_eq!(
            c.messages[2].content,
            [Part::ToolResult { id: "c1".into(), content: "sunny".into(), is_error: false }]
        );
        assert_eq!(c.tools[0].name, "w");
        assert_eq!(c.tool_choice, Some(ToolChoice::Tool("w".into())));
        assert!(matches!(c.format, Some(Format::JsonSchema { ref name, .. }) if name == "x"));
    }

    #[test]
    fn what_qlaud_cannot_serve_is_refused() {
        check(&req(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})), false)
            .unwrap();
        check(&req(json!({"model": "m", "input": "hi", "conversation": "conv_1"})), false).unwrap();
        for bad in [
            json!({"model": "m", "input": "hi", "previous_response_id": "r", "conversation": "c"}),
            json!({"model": "m", "input": "hi", "background": true}),
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
            json!({"model": "m"}),
            json!({"model": "m", "input": 3}),
        ] {
            assert_eq!(check(&req(bad.clone()), false).unwrap_err().status, 400, "{bad}");
        }
    }
}
