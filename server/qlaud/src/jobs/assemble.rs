//! A job's model call is streamed from the provider, so that cancelling
//! the job can stop it and bill what it produced. This reads that stream,
//! in the endpoint's own event form, back into the JSON body the
//! synchronous call answers: Anthropic's message, OpenAI's chat
//! completion, or the Responses object its final event carries.
//!
//! A stream that stopped before its end (the job was cancelled) leaves the
//! answer as far as it came, with no stop reason.

use std::collections::BTreeMap;

use dropshot::Body;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::gateway::sse;

/// The endpoint forms a job's stream comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Messages,
    ChatCompletions,
    Responses,
}

/// What the stream carried.
pub struct Read {
    /// The whole answer, or the answer so far when the stream stopped
    /// short.
    pub body: Value,
    /// The stream reached its end.
    pub complete: bool,
    /// The message of the error event a broken-off stream ended with.
    pub error: Option<String>,
}

/// Reads a streamed answer to its end (the stream ends early by itself
/// when the job is cancelled: its provider call is dropped and settled).
pub async fn read(form: Form, mut body: Body) -> Read {
    let mut framer = sse::Framer::default();
    let mut answer = Answer::new(form);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        for event in framer.push(&data) {
            let (name, data) = sse::parse(&event);
            answer.push(name, &data);
        }
    }
    answer.finish()
}

/// An answer being put together from its events.
struct Answer {
    form: Form,
    /// Anthropic's message (from `message_start`), a chat completion's
    /// top-level fields, or the latest Responses object.
    top: Map<String, Value>,
    /// Anthropic's content blocks, and the JSON input of each so far.
    blocks: Vec<(Value, String)>,
    choices: BTreeMap<u64, Choice>,
    /// Responses output items, by index (done ones replace added ones).
    items: BTreeMap<u64, Value>,
    complete: bool,
    error: Option<String>,
}

/// One chat choice so far.
#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, Value>,
    /// Other message fields providers stream (annotations, audio, …).
    other: Map<String, Value>,
    logprobs: Option<Value>,
    finish_reason: Value,
}

impl Answer {
    fn new(form: Form) -> Answer {
        Answer {
            form,
            top: Map::new(),
            blocks: Vec::new(),
            choices: BTreeMap::new(),
            items: BTreeMap::new(),
            complete: false,
            error: None,
        }
    }

    fn push(&mut self, name: Option<&str>, data: &str) {
        if self.form == Form::ChatCompletions && data.trim() == "[DONE]" {
            self.complete = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return };
        if name == Some("error") || v["type"] == "error" || v["error"].is_object() {
            let message = v["error"]["message"].as_str().or(v["message"].as_str());
            self.error = Some(message.unwrap_or("the provider's stream broke off").to_string());
            return;
        }
        match self.form {
            Form::Messages => self.push_message(v),
            Form::ChatCompletions => self.push_chunk(v),
            Form::Responses => self.push_response(v),
        }
    }

    fn push_message(&mut self, v: Value) {
        let index = v["index"].as_u64().unwrap_or(0) as usize;
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                if let Value::Object(m) = &v["message"] {
                    self.top = m.clone();
                }
            }
            "content_block_start" => {
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, (Value::Null, String::new()));
                }
                self.blocks[index] = (v["content_block"].clone(), String::new());
            }
            "content_block_delta" => {
                let Some((block, json)) = self.blocks.get_mut(index) else { return };
                let d = &v["delta"];
                match d["type"].as_str().unwrap_or_default() {
                    "input_json_delta" => json.push_str(d["partial_json"].as_str().unwrap_or("")),
                    "text_delta" => append(block, "text", &d["text"]),
                    "thinking_delta" => append(block, "thinking", &d["thinking"]),
                    "signature_delta" => block["signature"] = d["signature"].clone(),
                    "citations_delta" => {
                        let list = &mut block["citations"];
                        if !list.is_array() {
                            *list = json!([]);
                        }
                        if let Some(list) = list.as_array_mut() {
                            list.push(d["citation"].clone());
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Value::Object(delta) = &v["delta"] {
                    for (k, x) in delta {
                        self.top.insert(k.clone(), x.clone());
                    }
                }
                // Counts here are cumulative: they replace the start's.
                if let Value::Object(usage) = &v["usage"] {
                    let u = self.top.entry("usage").or_insert_with(|| json!({}));
                    for (k, x) in usage {
                        u[k] = x.clone();
                    }
                }
            }
            "message_stop" => self.complete = true,
            _ => {}
        }
    }

    fn push_chunk(&mut self, v: Value) {
        let Value::Object(chunk) = v else { return };
        for (k, x) in &chunk {
            match k.as_str() {
                "choices" | "object" => {}
                "usage" if x.is_null() => {}
                _ => {
                    self.top.insert(k.clone(), x.clone());
                }
            }
        }
        for c in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let choice = self.choices.entry(c["index"].as_u64().unwrap_or(0)).or_default();
            if !c["finish_reason"].is_null() {
                choice.finish_reason = c["finish_reason"].clone();
            }
            if let Some(content) = c["logprobs"]["content"].as_array() {
                let lp = choice.logprobs.get_or_insert_with(|| json!({"content": []}));
                if let Some(all) = lp["content"].as_array_mut() {
                    all.extend(content.iter().cloned());
                }
            }
            let Value::Object(delta) = &c["delta"] else { continue };
            for (k, x) in delta {
                match (k.as_str(), x) {
                    (_, Value::Null) => {}
                    ("role", _) => choice.role = Some(x.clone()),
                    ("content", Value::String(s)) => {
                        choice.content.get_or_insert_default().push_str(s);
                    }
                    ("refusal", Value::String(s)) => {
                        choice.refusal.get_or_insert_default().push_str(s);
                    }
                    ("tool_calls", Value::Array(calls)) => {
                        for call in calls {
                            let i = call["index"].as_u64().unwrap_or(0);
                            let open = choice.tool_calls.entry(i).or_insert_with(|| {
                                json!({"id": "", "type": "function",
                                       "function": {"name": "", "arguments": ""}})
                            });
                            for key in ["id", "type"] {
                                if call[key].is_string() {
                                    open[key] = call[key].clone();
                                }
                            }
                            let f = &call["function"];
                            append(&mut open["function"], "name", &f["name"]);
                            append(&mut open["function"], "arguments", &f["arguments"]);
                        }
                    }
                    (_, Value::String(s)) => append(
                        choice.other.entry(k.clone()).or_insert_with(|| json!("")),
                        "",
                        &Value::String(s.clone()),
                    ),
                    (_, Value::Array(a)) => {
                        let list = choice.other.entry(k.clone()).or_insert_with(|| json!([]));
                        if let Some(list) = list.as_array_mut() {
                            list.extend(a.iter().cloned());
                        }
                    }
                    _ => {
                        choice.other.insert(k.clone(), x.clone());
                    }
                }
            }
        }
    }

    fn push_response(&mut self, v: Value) {
        let kind = v["type"].as_str().unwrap_or_default();
        if let Value::Object(r) = &v["response"] {
            self.top = r.clone();
        }
        let index = v["output_index"].as_u64().unwrap_or(0);
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.complete = true;
            }
            "response.output_item.added" | "response.output_item.done" => {
                self.items.insert(index, v["item"].clone());
            }
            "response.output_text.delta" => {
                let Some(item) = self.items.get_mut(&index) else { return };
                let part = v["content_index"].as_u64().unwrap_or(0) as usize;
                let content = &mut item["content"];
                if !content.is_array() {
                    *content = json!([]);
                }
                let Some(parts) = content.as_array_mut() else { return };
                while parts.len() <= part {
                    parts.push(json!({"type": "output_text", "text": "", "annotations": []}));
                }
                append(&mut parts[part], "text", &v["delta"]);
            }
            "response.function_call_arguments.delta" => {
                if let Some(item) = self.items.get_mut(&index) {
                    append(item, "arguments", &v["delta"]);
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Read {
        let complete = self.complete && self.error.is_none();
        let body = match self.form {
            Form::Messages => {
                let content: Vec<Value> = self
                    .blocks
                    .into_iter()
                    .filter(|(block, _)| !block.is_null())
                    .map(|(mut block, json)| {
                        if !json.is_empty() {
                            // A cut-off input reads as no input at all.
                            block["input"] = serde_json::from_str::<Value>(&json)
                                .ok()
                                .filter(Value::is_object)
                                .unwrap_or_else(|| json!({}));
                        }
                        block
                    })
                    .collect();
                self.top.insert("content".into(), content.into());
                Value::Object(self.top)
            }
            Form::ChatCompletions => {
                let choices: Vec<Value> =
                    self.choices.into_iter().map(|(index, c)| chat_choice(index, c)).collect();
                self.top.insert("object".into(), "chat.completion".into());
                self.top.insert("choices".into(), choices.into());
                Value::Object(self.top)
            }
            Form::Responses if complete => Value::Object(self.top),
            Form::Responses => {
                // Stopped short: the response as last announced, with the
                // output that came through, cancelled (as OpenAI marks a
                // background response stopped).
                let output: Vec<Value> = self
                    .items
                    .into_values()
                    .map(|mut item| {
                        if item["status"] == "in_progress" {
                            item["status"] = "incomplete".into();
                        }
                        item
                    })
                    .collect();
                self.top.insert("output".into(), output.into());
                self.top.insert("status".into(), "cancelled".into());
                Value::Object(self.top)
            }
        };
        Read { body, complete, error: self.error }
    }
}

/// A chat choice as a whole completion carries it.
fn chat_choice(index: u64, c: Choice) -> Value {
    let calls: Vec<Value> = c.tool_calls.into_values().collect();
    // Only a tool call goes without content (`null`), as in a whole answer.
    let content = match c.content {
        Some(s) if !s.is_empty() || calls.is_empty() => Value::String(s),
        _ => Value::Null,
    };
    let mut message = json!({
        "role": c.role.unwrap_or_else(|| "assistant".into()),
        "content": content,
        "refusal": c.refusal,
    });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    for (k, x) in c.other {
        message[k] = x;
    }
    json!({"index": index, "message": message, "logprobs": c.logprobs,
           "finish_reason": c.finish_reason})
}

/// Appends string `more` to the string at `key` of `target` (to `target`
/// itself when `key` is empty), creating it when missing.
fn append(target: &mut Value, key: &str, more: &Value) {
    let Some(more) = more.as_str() else { return };
    let slot = if key.is_empty() { target } else { &mut target[key] };
    match slot {
        Value::String(s) => s.push_str(more),
        other => *other = Value::String(more.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_events(form: Form, events: &[(Option<&str>, Value)]) -> Read {
        let mut a = Answer::new(form);
        for (name, data) in events {
            a.push(*name, &data.to_string());
        }
        a.finish()
    }

    #[test]
    fn an_anthropic_stream_becomes_its_message() {
        let got = read_events(
            Form::Messages,
            &[
                (
                    Some("message_start"),
                    json!({"type": "message_start", "message": {"id": "m",
                    "type": "message", "role": "assistant", "model": "c", "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 5, "output_tokens": 1}}}),
                ),
                (
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi "}}),
                ),
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "there"}}),
                ),
                (
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": "t", "name": "w", "input": {}}}),
                ),
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
                ),
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
                ),
                (
                    Some("message_delta"),
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"output_tokens": 12, "cost_micros": 7}}),
                ),
                (Some("message_stop"), json!({"type": "message_stop"})),
            ],
        );
        assert!(got.complete);
        assert_eq!(
            got.body,
            json!({"id": "m", "type": "message", "role": "assistant", "model": "c",
                "content": [{"type": "text", "text": "Hi there"},
                            {"type": "tool_use", "id": "t", "name": "w", "input": {"a": 1}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 12, "cost_micros": 7}})
        );
    }

    #[test]
    fn chat_chunks_become_their_completion() {
        let chunk = |delta: Value, finish: Value| {
            (
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "g", "usage": null,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
            )
        };
        let mut events = vec![
            chunk(json!({"role": "assistant", "content": null, "refusal": null}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call", "type": "function",
                                       "function": {"name": "w", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
        ];
        events.push((
            None,
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
            "model": "g", "choices": [], "usage": {"prompt_tokens": 3}}),
        ));
        let mut got = read_events(Form::ChatCompletions, &events);
        assert!(!got.complete, "no [DONE] yet");
        got.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = json!("{}");
        assert_eq!(
            got.body,
            json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "g",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": null, "refusal": null,
                        "tool_calls": [{"id": "call", "type": "function",
                                        "function": {"name": "w", "arguments": "{}"}}]}}],
                "usage": {"prompt_tokens": 3}})
        );
    }

    #[test]
    fn an_error_event_is_kept() {
        let got = read_events(
            Form::Messages,
            &[(Some("error"), json!({"type": "error", "error": {"message": "boom"}}))],
        );
        assert_eq!(got.error.as_deref(), Some("boom"));
        assert!(!got.complete);
    }
}
