//! Reading a Responses request: what qlaud refuses to forward, and the
//! translation into OpenAI's chat shape, from which every chat provider's
//! own request is made by the translators that already exist (one per
//! direction: a Claude model's request comes from
//! `anthropic::convert::request_from_openai`).

use qlaud_api::{ChatCompletionRequest, ResponsesRequest};
use serde_json::{Map, Value, json};

use crate::gateway::error::GatewayError;

/// Tool types that are plain definitions the model calls back through the
/// client. Every other type is a hosted tool the provider runs and bills
/// per call, at fees qlaud does not price.
const CLIENT_TOOLS: [&str; 2] = ["function", "custom"];

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
}

/// Refuses what qlaud cannot serve or bound, before any provider is
/// called: provider-held state (`previous_response_id`, `conversation`,
/// item references, stored prompts, background runs) and hosted tools.
pub fn check(req: &ResponsesRequest) -> Result<(), GatewayError> {
    let later = "qlaud will serve response state from its own store in a later release; until \
                 then send the whole conversation in `input`";
    if req.previous_response_id.is_some() {
        return Err(bad(format!("previous_response_id is not supported yet: {later}")));
    }
    if req.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(bad(format!("conversation is not supported yet: {later}")));
    }
    if req.extra.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(bad(format!("background responses are not supported yet: {later}")));
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
                return Err(bad(format!("item_reference inputs are not supported yet: {later}")));
            }
        }
        Some(_) => return Err(bad("input must be a string or an array of input items")),
    }
    if let Some(i) = &req.instructions
        && !(i.is_string() || i.is_null())
    {
        return Err(bad("instructions must be a string"));
    }
    for tool in req.tools.iter().flatten() {
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

/// A user-side content part as a chat content part.
fn part(p: &Value, model: &str) -> Result<Value, GatewayError> {
    match p["type"].as_str() {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": p["text"]}))
        }
        Some("input_image") => {
            let url = p["image_url"].as_str().ok_or_else(|| {
                bad(format!("model {model:?} takes input_image by image_url (a URL or data URL)"))
            })?;
            let mut image = json!({"url": url});
            if let Some(detail) = p["detail"].as_str() {
                image["detail"] = detail.into();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        other => Err(bad(format!(
            "content part {} is not supported for model {model:?}",
            other.unwrap_or("without a type")
        ))),
    }
}

/// Appends a function call to the assistant turn it belongs to.
fn push_call(messages: &mut Vec<Value>, call: Value) {
    if let Some(last) = messages.last_mut()
        && last["role"] == "assistant"
    {
        match last["tool_calls"].as_array_mut() {
            Some(calls) => calls.push(call),
            None => last["tool_calls"] = json!([call]),
        }
        return;
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

fn push_item(messages: &mut Vec<Value>, item: &Value, model: &str) -> Result<(), GatewayError> {
    // Easy input messages (`{role, content}`) carry no type.
    let kind = item["type"].as_str().unwrap_or("message");
    match kind {
        "message" => {
            let role = item["role"].as_str().unwrap_or_default();
            let content = match (role, &item["content"]) {
                (_, Value::String(s)) => Value::String(s.clone()),
                ("assistant", c) => Value::String(text_of(c)),
                ("system" | "developer", c) => Value::String(text_of(c)),
                ("user", Value::Array(parts)) => {
                    Value::Array(parts.iter().map(|p| part(p, model)).collect::<Result<_, _>>()?)
                }
                _ => return Err(bad(format!("input message with role {role:?} is not valid"))),
            };
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(bad(format!("input message with role {role:?} is not valid")));
            }
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let arguments = match &item["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".to_string(),
                other => other.to_string(),
            };
            let call = json!({"id": item["call_id"], "type": "function",
                              "function": {"name": item["name"], "arguments": arguments}});
            push_call(messages, call);
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(s) => s.clone(),
                other => text_of(other),
            };
            messages.push(json!({"role": "tool", "tool_call_id": item["call_id"],
                                 "content": output}));
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

/// The request in OpenAI's chat shape, for a chat provider. `model` names
/// the model in errors; the caller sets the upstream id and limits.
pub fn to_chat(
    req: &ResponsesRequest,
    model: &str,
    stream: bool,
) -> Result<ChatCompletionRequest, GatewayError> {
    let mut messages = Vec::new();
    if let Some(i) = req.instructions.as_ref().and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match &req.input {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                push_item(&mut messages, item, model)?;
            }
        }
        _ => {}
    }
    let mut extra = Map::new();
    for field in ["temperature", "top_p", "parallel_tool_calls"] {
        if let Some(v) = req.extra.get(field).filter(|v| !v.is_null()) {
            extra.insert(field.into(), v.clone());
        }
    }
    if let Some(user) = req.extra.get("user").or_else(|| req.extra.get("safety_identifier")) {
        extra.insert("user".into(), user.clone());
    }
    if let Some(tools) = &req.tools
        && !tools.is_empty()
    {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t["name"], "parameters": t["parameters"]});
                for field in ["description", "strict"] {
                    if !t[field].is_null() {
                        f[field] = t[field].clone();
                    }
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        extra.insert("tools".into(), tools.into());
    }
    if let Some(choice) = &req.tool_choice {
        let c = match choice {
            Value::String(_) => Some(choice.clone()),
            Value::Object(_) if choice["type"] == "function" => {
                Some(json!({"type": "function", "function": {"name": choice["name"]}}))
            }
            _ => None,
        };
        if let Some(c) = c {
            extra.insert("tool_choice".into(), c);
        }
    }
    let format = req.text.as_ref().map(|t| &t["format"]).filter(|f| f.is_object());
    match format.and_then(|f| f["type"].as_str()) {
        Some("json_schema") => {
            let f = format.unwrap_or(&Value::Null);
            let mut schema = json!({"name": f["name"], "schema": f["schema"]});
            for field in ["description", "strict"] {
                if !f[field].is_null() {
                    schema[field] = f[field].clone();
                }
            }
            extra.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": schema}),
            );
        }
        Some("json_object") => {
            extra.insert("response_format".into(), json!({"type": "json_object"}));
        }
        _ => {}
    }
    Ok(ChatCompletionRequest {
        model: model.to_string(),
        messages,
        stream: stream.then_some(true),
        max_tokens: None,
        max_completion_tokens: req.max_output_tokens,
        extra,
    })
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
        check(&r).unwrap();
        let c = to_chat(&r, "m", false).unwrap();
        assert_eq!(c.messages[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(c.messages[1]["content"][0], json!({"type": "text", "text": "weather?"}));
        assert_eq!(c.messages[2]["tool_calls"][0]["id"], "c1");
        assert_eq!(
            c.messages[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
        );
        assert_eq!(c.extra["tools"][0]["function"]["name"], "w");
        assert_eq!(c.extra["tool_choice"]["function"]["name"], "w");
        assert_eq!(c.extra["response_format"]["json_schema"]["name"], "x");
    }

    #[test]
    fn provider_state_and_hosted_tools_are_refused() {
        for bad in [
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
            json!({"model": "m", "input": "hi", "conversation": "conv_1"}),
            json!({"model": "m", "input": "hi", "background": true}),
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
            json!({"model": "m"}),
            json!({"model": "m", "input": 3}),
        ] {
            assert_eq!(check(&req(bad.clone())).unwrap_err().status, 400, "{bad}");
        }
    }
}
