//! Responses API items and the neutral form threads store them in
//! (Anthropic content blocks): a response's input and output items become
//! thread messages, one message per item; stored messages become input
//! items again (history sent to a GPT model's own Responses API) or
//! conversation items (the Conversations view of a thread).

use qlaud_api::MessageRole;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// An item as a stored message: its role and content blocks.
pub type Stored = (MessageRole, Vec<Value>);

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// Text of message content: a string, or its text (and refusal) parts.
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

/// A user content part as a block.
fn user_block(p: &Value) -> Result<Value> {
    match p["type"].as_str() {
        Some("input_text" | "output_text" | "text") => {
            Ok(text_block(p["text"].as_str().unwrap_or_default()))
        }
        Some("input_image") => {
            let url = p["image_url"].as_str().ok_or_else(|| {
                Error::invalid("input_image is kept by image_url (a URL or data URL)")
            })?;
            Ok(match url.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
                Some((media_type, data)) => json!({"type": "image", "source": {
                    "type": "base64", "media_type": media_type, "data": data}}),
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        other => Err(Error::invalid(format!(
            "content part {} cannot be kept in a conversation; send input_text or input_image",
            other.unwrap_or("without a type")
        ))),
    }
}

/// One input or output item as a stored message; `None` for items that
/// apply to one response only (system and developer messages) or that only
/// their provider can read (reasoning).
pub fn to_stored(item: &Value) -> Result<Option<Stored>> {
    // Easy input messages (`{role, content}`) carry no type.
    match item["type"].as_str().unwrap_or("message") {
        "message" => match item["role"].as_str().unwrap_or_default() {
            "system" | "developer" => Ok(None),
            "assistant" => {
                let text = text_of(&item["content"]);
                Ok(Some((MessageRole::Assistant, vec![text_block(&text)])))
            }
            "user" => {
                let blocks = match &item["content"] {
                    Value::String(s) => vec![text_block(s)],
                    Value::Array(parts) => parts.iter().map(user_block).collect::<Result<_>>()?,
                    _ => return Err(Error::invalid("message content must be a string or parts")),
                };
                Ok(Some((MessageRole::User, blocks)))
            }
            role => Err(Error::invalid(format!("message role {role:?} is not valid"))),
        },
        "function_call" => {
            let call = json!({"type": "tool_use",
                "id": item["call_id"].as_str().unwrap_or_default(),
                "name": item["name"].as_str().unwrap_or_default(),
                "input": crate::dialects::chat::arguments(&item["arguments"])});
            Ok(Some((MessageRole::Assistant, vec![call])))
        }
        "function_call_output" => {
            let output = text_of(&item["output"]);
            let result = json!({"type": "tool_result",
                "tool_use_id": item["call_id"].as_str().unwrap_or_default(), "content": output});
            Ok(Some((MessageRole::User, vec![result])))
        }
        "reasoning" => Ok(None),
        other => Err(Error::invalid(format!(
            "item type {other:?} cannot be kept in a conversation; send message, function_call \
             and function_call_output items"
        ))),
    }
}

/// A request's `input` (a string or items) as stored messages.
pub fn input_to_stored(input: Option<&Value>) -> Result<Vec<Stored>> {
    match input {
        Some(Value::String(s)) => Ok(vec![(MessageRole::User, vec![text_block(s)])]),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .map(to_stored)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// Text of a `tool_result` block's content: a string or text blocks.
fn result_text(content: &Value) -> String {
    match content {
        Value::Array(_) => text_of(content),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// A stored message as Responses items, in order: its text and images as
/// one message item, each tool call and result as its own item. With
/// `id`, the items are conversation items (ids and statuses: the first
/// item takes the message's id, the next ones `{id}_1`, `{id}_2`, …);
/// without, they are input items for a provider.
pub fn to_items(role: MessageRole, blocks: &[Value], id: Option<&str>) -> Vec<Value> {
    let mut items = Vec::new();
    let mut parts = Vec::new();
    let flush = |parts: &mut Vec<Value>, items: &mut Vec<Value>| {
        if parts.is_empty() {
            return;
        }
        let role = match role {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        };
        let parts = std::mem::take(parts);
        // Providers take an earlier answer as an assistant message whose
        // content is its text.
        let content = match (role, id) {
            ("assistant", None) => Value::String(
                parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
            ),
            _ => Value::Array(parts),
        };
        items.push(json!({"type": "message", "role": role, "content": content}));
    };
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => {
                let text = b["text"].as_str().unwrap_or_default();
                parts.push(match role {
                    MessageRole::User => json!({"type": "input_text", "text": text}),
                    MessageRole::Assistant => {
                        json!({"type": "output_text", "text": text, "annotations": []})
                    }
                });
            }
            Some("image") => {
                let s = &b["source"];
                let url = match s["type"].as_str() {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        s["media_type"].as_str().unwrap_or("image/png"),
                        s["data"].as_str().unwrap_or_default()
                    ),
                    _ => s["url"].as_str().unwrap_or_default().to_string(),
                };
                parts.push(json!({"type": "input_image", "image_url": url, "detail": "auto"}));
            }
            Some("tool_use") => {
                flush(&mut parts, &mut items);
                items.push(json!({"type": "function_call",
                    "call_id": b["id"], "name": b["name"], "arguments": b["input"].to_string()}));
            }
            Some("tool_result") => {
                flush(&mut parts, &mut items);
                items.push(json!({"type": "function_call_output",
                    "call_id": b["tool_use_id"], "output": result_text(&b["content"])}));
            }
            // Other blocks (thinking, documents) have no item here.
            _ => {}
        }
    }
    flush(&mut parts, &mut items);
    if let Some(id) = id {
        for (n, item) in items.iter_mut().enumerate() {
            item["id"] = if n == 0 { id.into() } else { format!("{id}_{n}").into() };
            item["status"] = "completed".into();
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_survive_the_round_trip_through_blocks() {
        let items = [
            json!({"role": "user", "content": "weather?"}),
            json!({"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"}),
            json!({"type": "function_call_output", "call_id": "c1", "output": "sunny"}),
            json!({"type": "message", "role": "assistant",
                   "content": [{"type": "output_text", "text": "It is sunny"}]}),
        ];
        let stored: Vec<Stored> = items.iter().map(|i| to_stored(i).unwrap().unwrap()).collect();
        assert_eq!(stored[1].1[0]["input"], json!({"a": 1}));
        let back: Vec<Value> =
            stored.iter().flat_map(|(role, blocks)| to_items(*role, blocks, None)).collect();
        assert_eq!(back[0]["content"][0], json!({"type": "input_text", "text": "weather?"}));
        assert_eq!(back[1]["call_id"], "c1");
        assert_eq!(back[1]["arguments"], "{\"a\":1}");
        assert_eq!(back[2]["output"], "sunny");
        assert_eq!(back[3]["content"], "It is sunny");
        // Developer messages and reasoning apply to one response only.
        assert!(to_stored(&json!({"role": "developer", "content": "x"})).unwrap().is_none());
        assert!(to_stored(&json!({"type": "reasoning", "summary": []})).unwrap().is_none());
    }

    #[test]
    fn a_message_of_several_blocks_is_several_conversation_items() {
        let blocks = [
            json!({"type": "text", "text": "let me look"}),
            json!({"type": "tool_use", "id": "t1", "name": "w", "input": {}}),
        ];
        let items = to_items(MessageRole::Assistant, &blocks, Some("msg_1"));
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0]["id"].as_str(), items[1]["id"].as_str()),
            (Some("msg_1"), Some("msg_1_1"))
        );
        assert_eq!(items[1]["type"], "function_call");
    }
}
