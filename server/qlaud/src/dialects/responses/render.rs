//! Answers in the Responses shape, from the internal representation: the
//! whole response object, and the typed stream events with their
//! `sequence_number`s (`response.created` … `response.completed`), as the
//! official clients' stream helpers expect them.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::Prices;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::meter::{Usage, cost_micros};
use crate::providers::ir::{Block, Completion, Event, StopReason};
use crate::store::new_id;

/// A Responses usage object. Input counts cached tokens too, as OpenAI
/// reports it; `cost_micros` is qlaud's charge.
pub fn usage_json(u: &Usage, cost: i64) -> Value {
    let input = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens,
                                 "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + u.output_tokens,
        "cost_micros": cost,
    })
}

/// The response id for an answer whose provider id is `id`: `resp_…`, as
/// clients that store ids expect.
fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else if id.is_empty() {
        new_id("resp")
    } else {
        format!("resp_{}", id.trim_start_matches("msg_").replace(['-', '.'], "_"))
    }
}

/// The response object around `output`. Request fields the answer would
/// echo (tools, text format, …) take their defaults: the client knows what
/// it sent.
fn response_object(
    id: &str,
    model: &str,
    created: i64,
    status: &str,
    stop: Option<&StopReason>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let incomplete = (status == "incomplete").then(|| {
        let reason = match stop {
            Some(StopReason::Refusal) => "content_filter",
            _ => "max_output_tokens",
        };
        json!({"reason": reason})
    });
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

/// `incomplete` when the answer was cut by its output limit (or a content
/// filter), as OpenAI reports it; `completed` otherwise.
fn status(stop: Option<&StopReason>) -> &'static str {
    match stop {
        Some(StopReason::MaxTokens | StopReason::Refusal) => "incomplete",
        _ => "completed",
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [text_part(text)]})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// Encodes a whole answer as a response object.
pub fn response(c: &Completion, model: &str, created: i64, cost: i64) -> Value {
    let mut output = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, output: &mut Vec<Value>| {
        if !text.is_empty() {
            output.push(message_item(&new_id("msg"), text, "completed"));
            text.clear();
        }
    };
    for block in &c.blocks {
        match block {
            Block::Text(t) => text.push_str(t),
            Block::ToolUse { id, name, input } => {
                flush(&mut text, &mut output);
                output.push(call_item(&new_id("fc"), id, name, &input.to_string(), "completed"));
            }
        }
    }
    flush(&mut text, &mut output);
    let stop = c.stop.as_ref();
    response_object(
        &response_id(&c.id),
        model,
        created,
        status(stop),
        stop,
        output,
        usage_json(&c.usage, cost),
    )
}

/// One typed event: `event: <type>` and its JSON with `type` and
/// `sequence_number`.
fn event(kind: &str, seq: u64, mut body: Value) -> Bytes {
    body["type"] = kind.into();
    body["sequence_number"] = seq.into();
    sse::event(Some(kind), &body.to_string())
}

/// The `error` event that ends a stream which broke off.
pub fn error_event(err: GatewayError, seq: u64) -> Bytes {
    let e = err.into_openai().error;
    event(
        "error",
        seq,
        json!({"code": e.code.unwrap_or(e.kind), "message": e.message, "param": e.param}),
    )
}

/// The output item being streamed.
enum Open {
    Message { id: String, text: String },
    Call { id: String, call_id: String, name: String, arguments: String },
}

/// Writes internal events as Responses stream events, adding qlaud's cost
/// to the final usage.
pub struct Encoder {
    id: String,
    model: String,
    created: i64,
    prices: Prices,
    seq: u64,
    /// Finished output items, for the final response object.
    output: Vec<Value>,
    open: Option<Open>,
    usage: Usage,
    stop: Option<StopReason>,
    /// Fields set on every response object.
    echo: serde_json::Map<String, Value>,
    /// The final response object, once the stream has ended.
    done: Option<Value>,
}

impl Encoder {
    pub fn new(model: &str, prices: Prices) -> Encoder {
        Encoder {
            id: new_id("resp"),
            model: model.to_string(),
            created: chrono::Utc::now().timestamp(),
            prices,
            seq: 0,
            output: Vec::new(),
            open: None,
            usage: Usage::default(),
            stop: None,
            echo: serde_json::Map::new(),
            done: None,
        }
    }

    pub fn echo(&mut self, fields: serde_json::Map<String, Value>) {
        self.echo = fields;
    }

    pub fn final_response(&mut self) -> Option<Value> {
        self.done.take()
    }

    fn next(&mut self, kind: &str, body: Value) -> Bytes {
        let b = event(kind, self.seq, body);
        self.seq += 1;
        b
    }

    /// The error event for a stream that broke off here.
    pub fn error(&mut self, err: GatewayError) -> Bytes {
        let b = error_event(err, self.seq);
        self.seq += 1;
        b
    }

    fn snapshot(&self, status: &str, usage: Value) -> Value {
        let mut r = response_object(
            &self.id,
            &self.model,
            self.created,
            status,
            self.stop.as_ref(),
            self.output.clone(),
            usage,
        );
        for (k, v) in &self.echo {
            r[k.as_str()] = v.clone();
        }
        r
    }

    /// Closes the open output item: its `.done` events.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let index = self.output.len();
        let item = match self.open.take() {
            None => return,
            Some(Open::Message { id, text }) => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = text.as_str().into();
                done["logprobs"] = json!([]);
                out.push(self.next("response.output_text.done", done));
                let mut part = at;
                part["part"] = text_part(&text);
                out.push(self.next("response.content_part.done", part));
                message_item(&id, &text, "completed")
            }
            Some(Open::Call { id, call_id, name, arguments }) => {
                let done = json!({"item_id": id, "output_index": index, "name": name,
                                  "arguments": arguments});
                out.push(self.next("response.function_call_arguments.done", done));
                call_item(&id, &call_id, &name, &arguments, "completed")
            }
        };
        out.push(self.next(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        ));
        self.output.push(item);
    }

    fn open_item(&mut self, open: Open, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.output.len();
        let item = match &open {
            Open::Message { id, .. } => json!({"type": "message", "id": id,
                "status": "in_progress", "role": "assistant", "content": []}),
            Open::Call { id, call_id, name, .. } => call_item(id, call_id, name, "", "in_progress"),
        };
        out.push(
            self.next("response.output_item.added", json!({"output_index": index, "item": item})),
        );
        if let Open::Message { id, .. } = &open {
            let part = json!({"item_id": id, "output_index": index, "content_index": 0,
                              "part": text_part("")});
            out.push(self.next("response.content_part.added", part));
        }
        self.open = Some(open);
    }

    pub fn encode(&mut self, event: Event) -> Vec<Bytes> {
        let mut out = Vec::new();
        match event {
            Event::Start { .. } => {
                let r = self.snapshot("in_progress", Value::Null);
                out.push(self.next("response.created", json!({"response": r.clone()})));
                out.push(self.next("response.in_progress", json!({"response": r})));
            }
            Event::Text(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    let open = Open::Message { id: new_id("msg"), text: String::new() };
                    self.open_item(open, &mut out);
                }
                let index = self.output.len();
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(&t);
                    let body = json!({"item_id": id, "output_index": index, "content_index": 0,
                                      "delta": t, "logprobs": []});
                    out.push(self.next("response.output_text.delta", body));
                }
            }
            Event::ToolStart { id, name } => {
                let open =
                    Open::Call { id: new_id("fc"), call_id: id, name, arguments: String::new() };
                self.open_item(open, &mut out);
            }
            Event::ToolArgs(args) => {
                let index = self.output.len();
                if let Some(Open::Call { id, arguments, .. }) = &mut self.open {
                    arguments.push_str(&args);
                    let body = json!({"item_id": id, "output_index": index, "delta": args});
                    out.push(self.next("response.function_call_arguments.delta", body));
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
                let status = status(self.stop.as_ref());
                let r = self.snapshot(status, usage_json(&self.usage, cost));
                // OpenAI ends a response cut by its limit with
                // `response.incomplete`, a finished one with
                // `response.completed`.
                let kind = if status == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                self.done = Some(r.clone());
                out.push(self.next(kind, json!({"response": r})));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_text_then_a_call_with_ordered_sequence_numbers() {
        let mut e = Encoder::new("claude-test", Prices::default());
        let events = [
            Event::Start { id: "msg_1".into() },
            Event::Text("Hel".into()),
            Event::Text("lo".into()),
            Event::ToolStart { id: "toolu_1".into(), name: "f".into() },
            Event::ToolArgs("{}".into()),
            Event::Stop(StopReason::ToolUse),
            Event::End,
        ];
        let out: Vec<(Option<String>, Value)> = events
            .into_iter()
            .flat_map(|ev| e.encode(ev))
            .map(|b| {
                let (name, data) = sse::parse(&b);
                (name.map(str::to_string), serde_json::from_str(&data).unwrap())
            })
            .collect();
        let kinds: Vec<&str> = out.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (_, v)) in out.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64);
        }
        let done = &out.last().unwrap().1["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["call_id"], "toolu_1");
        assert_eq!(done["output"][1]["arguments"], "{}");
        assert_eq!(done["status"], "completed");
    }
}
